"""Training curves as a PNG: loss and accuracy per epoch, train and test, for one or more runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnspec.spec.metrics import metric

CURVES_FILE = "curves.png"


ONE_LEGEND_AFTER = 1  # more runs than this: one legend beside the panels, not one inside each


def plot_runs(runs: Sequence[tuple[str, list[dict[str, Any]]]], out: str | Path) -> Path:
    """Draw (label, metrics rows) pairs into one figure with a loss and an accuracy panel."""
    fig = curves_figure(runs)
    import matplotlib.pyplot as plt

    out = Path(out)
    from cnnspec.train.rundir import atomic_write

    # bbox_inches="tight": the figure grows to hold a legend placed outside the panels
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"), binary=True)
    plt.close(fig)
    return out


def curves_figure(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> Any:
    """The matplotlib figure of ``plot_runs``. With several runs the legend (one entry per run and
    split) goes to the right of both panels, where it cannot cover a curve."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(runs):
        color = colors[i % len(colors)]
        epochs = [r["epoch"] for r in rows]
        prefix = f"{label} " if len(runs) > 1 else ""
        for split, style in (("train", "--"), ("val", ":"), ("test", "-")):
            loss, accuracy = metric(split, "loss"), metric(split, "accuracy")
            if rows and loss in rows[0]:
                ax_loss.plot(epochs, [r[loss] for r in rows], style, color=color,
                             marker=".", label=f"{prefix}{split}")
                ax_acc.plot(epochs, [r[accuracy] for r in rows], style, color=color,
                            marker=".", label=f"{prefix}{split}")
    from matplotlib.ticker import MaxNLocator

    outside = len(runs) > ONE_LEGEND_AFTER
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not outside:
            ax.legend(fontsize="small")
    fig.suptitle(", ".join(label for label, _ in runs) if len(runs) <= 3 else f"{len(runs)} runs")
    fig.tight_layout()
    if outside:  # both panels carry the same labels: one legend, left edge just past the right panel
        handles, labels = ax_loss.get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize="small",
                   ncol=1 + len(labels) // 30)  # a column per 30 entries keeps it within the height
    return fig
