"""What the finished epochs leave: one metrics row each (metrics.jsonl), and which epoch is best."""

from __future__ import annotations

from typing import Any

from cnnspec.registry.types import Callback
from cnnspec.spec.metrics import DEFAULT_MONITOR, metric


def epoch_row(epoch: int, sums: dict[str, Any], lr: float, scores: dict[str, tuple[float, float]],
              eval_seconds: float, flops_per_sample: int | None) -> dict[str, Any]:
    """An epoch's row: its (1-based) number, the training sums' means, each evaluated split's
    (loss, accuracy) in ``scores`` (val, then test), the rate, times and throughput."""
    seen, seconds = sums["seen"], sums["seconds"]
    row: dict[str, Any] = {
        "epoch": epoch,
        metric("train", "loss"): sums["loss"] / seen,
        metric("train", "accuracy"): sums["correct"] / seen,
    }
    for split, (loss, accuracy) in scores.items():
        row[metric(split, "loss")], row[metric(split, "accuracy")] = loss, accuracy
    row["lr"] = lr
    row["seconds"] = seconds
    row["eval_seconds"] = eval_seconds
    row["samples_per_second"] = seen / seconds if seconds else 0.0
    # this process's training FLOP rate, as samples_per_second
    row["train_gflops_per_second"] = (None if flops_per_sample is None
                                      else flops_per_sample * row["samples_per_second"] / 1e9)
    return row


class History:
    """The rows of the finished epochs (``rows`` is the Context's ``metrics`` list) and the best one."""

    def __init__(self, rows: list[dict[str, Any]], callbacks: list[Callback]) -> None:
        self.rows = rows
        # which epoch is "best": a callback may say (early stopping's metric), else validation accuracy
        self.metric, self.mode = next((cb.best_metric for cb in callbacks if cb.best_metric), (DEFAULT_MONITOR, "max"))
        self.best: dict[str, Any] | None = None  # {"epoch", "metric", "value"}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def improves(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` is the best epoch so far; if so it becomes ``best``.

        "Best" is chosen on validation data only (validate refuses test metrics): choosing on the
        test set would make it part of training. A row without the metric is never best."""
        value = row.get(self.metric)
        if value is None or not (self.best is None or (value < self.best["value"] if self.mode == "min"
                                                       else value > self.best["value"])):
            return False
        self.best = {"epoch": row["epoch"], "metric": self.metric, "value": value}
        return True

    def restore(self, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
        """The history a checkpoint recorded (the rows list keeps its identity)."""
        self.rows[:] = rows
        self.best = best
