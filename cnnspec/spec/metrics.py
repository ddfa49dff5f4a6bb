"""The per-epoch metrics a run writes (metrics.jsonl) and a spec may name: defined here, once."""

from __future__ import annotations

SPLITS = ("train", "val", "test")  # val only when data.val_split > 0
MEASURES = ("loss", "accuracy")
MINIMISED = ("loss",)  # measures where lower is better; the others are maximised


def metric(split: str, measure: str) -> str:
    """The name of a metric: ``metric("val", "accuracy") == "val_accuracy"``."""
    return f"{split}_{measure}"


def split_of(name: str) -> str | None:
    """The split a metric name is measured on: ``split_of("val_loss") == "val"``; None if it names none."""
    split, sep, _ = name.partition("_")
    return split if sep and split in SPLITS else None


def measure_of(name: str) -> str:
    """What a metric name measures: ``measure_of("val_loss") == "loss"``."""
    return name.partition("_")[2]


def minimised(name: str) -> bool:
    """Whether lower is better for a metric (its measure is a loss): how "auto" modes and sweeps choose."""
    return measure_of(name) in MINIMISED


METRICS: tuple[str, ...] = tuple(metric(s, m) for s in SPLITS for m in MEASURES)
ALWAYS: tuple[str, ...] = tuple(metric(s, m) for s in SPLITS if s != "val" for m in MEASURES)  # every row has these
VAL: tuple[str, ...] = tuple(metric("val", m) for m in MEASURES)
DEFAULT_MONITOR = metric("val", "accuracy")  # what "best" and sweeps optimise unless told otherwise
