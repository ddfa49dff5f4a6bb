"""The per-epoch metrics a run writes (metrics.jsonl) and a spec may name: defined here, once."""

from __future__ import annotations

SPLITS = ("train", "val", "test")  # val only when data.val_split > 0
MEASURES = ("loss", "accuracy")


def metric(split: str, measure: str) -> str:
    """The name of a metric: ``metric("val", "accuracy") == "val_accuracy"``."""
    return f"{split}_{measure}"


METRICS: tuple[str, ...] = tuple(metric(s, m) for s in SPLITS for m in MEASURES)
ALWAYS: tuple[str, ...] = tuple(metric(s, m) for s in SPLITS if s != "val" for m in MEASURES)  # every row has these
VAL: tuple[str, ...] = tuple(metric("val", m) for m in MEASURES)
DEFAULT_MONITOR = metric("val", "accuracy")  # what "best" and sweeps optimise unless told otherwise
