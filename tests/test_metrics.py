"""The metric names: built and read in cnnspec/spec/metrics.py, and spelled out nowhere else in the package
or the first-party plugins."""

from __future__ import annotations

import ast

from conftest import ROOT

from cnnspec.spec.metrics import MEASURES, METRICS, SPLITS, measure_of, metric, minimised, split_of


def test_a_name_is_its_split_and_measure():
    assert metric("val", "accuracy") == "val_accuracy"
    assert [(split_of(m), measure_of(m)) for m in METRICS] == [(s, x) for s in SPLITS for x in MEASURES]
    assert split_of("epoch") is None and split_of("lr") is None and split_of("train") is None
    assert split_of("samples_per_second") is None


def test_losses_are_minimised_and_accuracies_maximised():
    # what early stopping's "auto" mode and a sweep's default direction used to test by substring
    for name in METRICS:
        assert minimised(name) == ("loss" in name) == (not name.endswith("accuracy"))


def _spelled_out() -> set[str]:
    """String constants that spell a metric name, or the pieces f-strings and prefix tests build one from."""
    return {*METRICS, *(f"{s}_" for s in SPLITS), *(f"_{m}" for m in MEASURES)}


def test_no_module_spells_a_metric_name():
    spelled = _spelled_out()
    found = []
    for path in sorted([*(ROOT / "cnnspec").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        if path == ROOT / "cnnspec" / "spec" / "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in spelled:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, "build metric names with cnnspec.spec.metrics instead:\n" + "\n".join(found)


def test_the_finder_sees_f_strings_and_prefix_tests():
    src = 'a = f"{split}_loss"\nb = name.startswith("val_")\nc = row["test_accuracy"]\n'
    values = {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant)}
    assert {"_loss", "val_", "test_accuracy"} <= values & _spelled_out()
