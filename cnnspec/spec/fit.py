"""Whether the spec's parts fit each other: watched metrics, augmentations, the dataset against the model."""

from __future__ import annotations

from cnnspec.errors import Problem, did_you_mean, path_str
from cnnspec.registry.types import ShapeError
from cnnspec.spec.metrics import METRICS, measure_of, metric, split_of
from cnnspec.spec.reporter import Reporter
from cnnspec.spec.sections import Component, NormalizeSection, SpecFile
from cnnspec.spec.shapes import ShapeTrace, fmt
from cnnspec.spec.yamlpos import Located


def watched_metrics(report: Reporter, source: SpecFile, scheduler: Component | None,
                    callbacks: list[Component]) -> None:
    """Every metric a scheduler or callback watches must exist, and not be a test metric."""
    has_val = source.data is not None and source.data.val_split > 0
    known = list(METRICS)
    for comp in ([scheduler] if scheduler else []) + callbacks:
        watched = comp.type.monitor(comp.params)
        if watched is None:
            continue
        path = comp.path + ("monitor",) if comp.path + ("monitor",) in report.loc.values else comp.path
        label = f"{path_str(comp.path)} {comp.name}"
        if watched not in known:
            report.fail(path, f"{label}: unknown metric '{watched}'{did_you_mean(watched, known)}; "
                        f"known: {', '.join(known)}")
        elif split_of(watched) == "test":
            report.fail(path, f"{label}: watching '{watched}' would choose on the test set; watch "
                        f"'{metric('val', measure_of(watched))}' and hold out a validation set with data.val_split")
        elif split_of(watched) == "val" and not has_val:
            report.fail(path, f"{label}: '{watched}' needs a validation set: set data.val_split "
                        "(for example 0.1)")


def augmentations_fit(report: Reporter, augmentations: list[Component], inp: tuple[int, ...],
                      loss: Component | None) -> None:
    """Each augmentation's static rule on the input shape; mixing labels needs a soft-target loss."""
    for comp in augmentations:
        label = f"{path_str(comp.path)} {comp.name}"
        try:
            comp.type.check(comp.params, inp)
        except ShapeError as e:
            path = comp.path + (e.key,) if e.key and comp.path + (e.key,) in report.loc.keys else comp.path
            report.fail(path, f"{label}: {e.message}", key=path != comp.path)
        if comp.type.mixes_labels and loss is not None and not loss.type.soft_targets:
            report.fail(comp.path, f"{label}: mixes labels into class probabilities, which the loss "
                        f"'{loss.name}' cannot take; use cross_entropy")


def normalize_fits(report: Reporter, source: SpecFile) -> None:
    """Fixed normalisation statistics must give one number per input channel."""
    norm = source.data.normalize if source.data is not None else None
    if isinstance(norm, NormalizeSection):
        for key in ("mean", "std"):
            n = len(getattr(norm, key))
            if n != source.input[0]:
                report.fail(("data", "normalize", key), f"data.normalize.{key}: {n} values for "
                            f"{source.input[0]} input channel{'s' if source.input[0] != 1 else ''}")


def dataset_fits(report: Reporter, ds: Component, inp: tuple[int, ...], t: ShapeTrace) -> None:
    """What the dataset declares (sample shape, class count) against the model's input and output."""
    shape = ds.type.sample_shape(ds.params)
    classes = ds.type.num_classes(ds.params)
    report.problems += fit_problems(report.loc, ds.name, shape, classes, inp, t)


def fit_problems(loc: Located, dataset: str, shape: tuple[int, ...] | None, classes: int | None,
                 inp: tuple[int, ...], t: ShapeTrace) -> list[Problem]:
    """Located problems when a dataset's sample shape or class count does not fit the model.

    ``validate`` calls this with what a dataset declares, ``run`` with what its files hold.
    """
    problems = []
    if shape is not None and tuple(shape) != tuple(inp):
        problems.append(loc.problem(("input",), f"input is {fmt(inp)} but dataset '{dataset}' "
                                    f"gives samples of {fmt(tuple(shape))}"))
    out = t.output_shape
    if classes is not None and out != (classes,):
        last = len(t.rows) - 1
        problems.append(loc.problem(("layers", last), f"layers[{last}] {t.rows[-1].type}: the model ends in "
                                    f"{fmt(out)} but dataset '{dataset}' has {classes} classes "
                                    f"(the last layer should give {classes})"))
    return problems
