"""tools/show.py: the validate table and JSON (``result_json``, ``row_json``, ``print_table``)."""

from __future__ import annotations

import copy
import io
import json

from conftest import GOOD, ROOT, SPECS

import cnnspec
from cnnspec.errors import Problem
from cnnspec.registry.manager import default_registry
from cnnspec.spec.check import check
from cnnspec.spec.yamlpos import load
from cnnspec.tools.show import print_problems, print_table, result_json, row_json


def checked(text: str):
    return check(load(text, "s.yaml"), default_registry())


def test_reference_spec_table(cli):
    res = cli("validate", str(ROOT / "specs" / "mnist_cnn.yaml"))
    assert res.code == 0
    assert "total params: 50,186" in res.out
    assert "64 x 7 x 7" in res.out and "3136" in res.out and "32 x 14 x 14" in res.out


def test_json_output(cli, write):
    path = write(GOOD)
    res = cli("validate", "--format", "json", path)
    assert res.code == 0
    doc = json.loads(res.out)
    (entry,) = doc["specs"]
    assert entry["valid"] is True and entry["errors"] == []
    assert entry["input_shape"] == [1, 28, 28] and entry["output_shape"] == [10]
    assert entry["total_params"] == 50186
    assert entry["layers"][0] == {"index": 0, "type": "conv2d", "output_shape": [32, 28, 28], "params": 320,
                                  "macs": 32 * 28 * 28 * 9, "param_bytes": 320 * 4,
                                  "activation_bytes": 32 * 28 * 28 * 4}
    assert [layer["params"] for layer in entry["layers"]] == [320, 0, 0, 18496, 0, 0, 0, 31370]


def test_json_shape_error_lists_layers_up_to_the_bad_one(cli, write):
    path = write(GOOD.replace("{type: linear, out_features: 10", "{type: linear, in_features: 2048, out_features: 10"))
    res = cli("validate", "--format", "json", path)
    assert res.code == 1
    entry = json.loads(res.out)["specs"][0]
    assert entry["valid"] is False
    (err,) = entry["errors"]
    assert (err["line"], err["column"]) == (11, 20)
    assert "in_features=2048 but 3136 features arrive" in err["message"]
    assert len(entry["layers"]) == 7 and entry["output_shape"] is None


def test_validate_table_and_json_have_cost_columns(cli) -> None:
    spec = str(next(p for p in SPECS if p.stem == "mnist_cnn"))
    r = cli("validate", spec)
    assert r.code == 0
    assert "MACs" in r.out and "param mem" in r.out and "output mem" in r.out
    assert "multiply-accumulates" in r.out
    r = cli("validate", "--format", "json", spec)
    doc = json.loads(r.out)
    (entry,) = doc["specs"]
    loaded = cnnspec.load_spec(spec)
    assert entry["total_macs"] == loaded.trace.total_macs > 0
    assert entry["param_bytes"] == 4 * entry["total_params"]
    layer = entry["layers"][0]
    for key in ("index", "type", "output_shape", "params", "macs", "param_bytes", "activation_bytes"):
        assert key in layer
    assert layer["activation_bytes"] == 4 * _prod(layer["output_shape"])
    assert sum(lay["macs"] for lay in entry["layers"]) == entry["total_macs"]


def test_nested_json_layers_carry_costs(cli) -> None:
    spec = str(next(p for p in SPECS if p.stem == "resnet20_cifar"))
    doc = json.loads(cli("validate", "--format", "json", spec).out)
    (entry,) = doc["specs"]

    def walk(layers):
        for lay in layers:
            assert "macs" in lay and "activation_bytes" in lay and "param_bytes" in lay
            if "layers" in lay and lay["layers"]:
                assert lay["macs"] == sum(c["macs"] for c in lay["layers"])
                walk(lay["layers"])

    walk(entry["layers"])


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def test_table_has_one_line_per_row_indented_under_composites() -> None:
    result = checked("input: [2, 8, 8]\nlayers:\n  - {type: repeat, times: 2, layers: [relu]}\n"
                     "  - flatten\n")
    out = io.StringIO()
    print_table("s.yaml", result.trace, out)
    text = out.getvalue().splitlines()
    assert text[0] == "s.yaml"
    head = text[1].split()
    assert head[:2] == ["#", "layer"] and "MACs" in head
    body = [ln for ln in text[3:] if ln and not ln.startswith("-")]
    assert body[0].split()[:3] == ["input", "2", "x"]  # the input row: no index
    assert body[1].split()[:3] == ["0", "repeat", "(x2)"]
    assert [ln.split()[:2] for ln in body[2:4]] == [["0.0", "relu"], ["0.1", "relu"]]
    assert body[2].index("relu") == body[1].index("repeat") + 2  # children indented under their composite
    assert body[4].split()[:3] == ["1", "flatten", "128"]
    assert "total params: 0   output shape: 128" in out.getvalue()


def test_table_says_when_macs_are_incomplete() -> None:
    from cnnspec.registry.types import LayerType, NoParams

    class NoRule(LayerType[NoParams]):
        name = "norule"

        def output_shape(self, p, shape):
            return shape

    reg = copy.copy(default_registry())  # a copy: the cached default registry stays as it is
    reg.entries = {k: dict(v) for k, v in reg.entries.items()}
    reg.owners = dict(reg.owners)
    reg.add("layer", NoRule(), "test")
    result = check(load("input: [1, 4, 4]\nlayers: [norule, flatten, {type: linear, out_features: 2}]\n",
                        "s.yaml"), reg)
    out = io.StringIO()
    print_table("s.yaml", result.trace, out)
    assert "incomplete (at least 32; '?' rows declare no rule)" in out.getvalue()


def test_result_json_of_an_invalid_spec_keeps_the_layers_traced_so_far() -> None:
    result = checked("input: [1, 8, 8]\nlayers:\n  - relu\n  - {type: linear, out_features: 3}\n")
    doc = result_json(result)
    assert doc["valid"] is False and doc["path"] == "s.yaml"
    (err,) = doc["errors"]
    assert (err["line"], err["column"]) == (4, 5) and "add 'flatten' before it" in err["message"]
    assert [lay["type"] for lay in doc["layers"]] == ["relu"]
    assert doc["output_shape"] is None and doc["total_params"] is None and doc["memory"] is None
    json.dumps(doc)  # plain data


def test_result_json_memory_follows_the_batch_size() -> None:
    result = checked(GOOD)
    small, big = result_json(result, 10)["memory"], result_json(result, 1000)["memory"]
    assert small["batch_size"] == 10 and big["batch_size"] == 1000
    assert big["total_bytes"] > small["total_bytes"]


def test_row_json_of_a_composite_carries_its_info_and_children() -> None:
    result = checked("input: [3, 8, 8]\nlayers:\n  - type: parallel\n    merge: concat\n"
                     "    branches: [[{type: conv2d, out_channels: 2, kernel_size: 1}], []]\n")
    row = row_json(result.trace.rows[0])
    assert row["type"] == "parallel" and row["merge"] == "concat" and row["output_shape"] == [5, 8, 8]
    assert [c["type"] for c in row["layers"]] == ["branch", "branch"]
    assert row["layers"][0]["layers"][0]["params"] == 3 * 2 + 2
    assert row["params"] == 8 and row["param_bytes"] == 32


def test_print_problems_writes_compiler_lines() -> None:
    out = io.StringIO()
    print_problems([Problem(3, 5, "layers[0]: bad", ("layers", 0), "a.yaml")], out)
    assert out.getvalue() == "a.yaml:3:5: error: layers[0]: bad\n"
