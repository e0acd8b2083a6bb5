"""curves.png: a run's learning curves, drawn from its metrics.jsonl at the end of the run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from metaaugment.infra.files import pyplot, save_figure
from metaaugment.spec import BenchmarkKind

CURVES_FILE = "curves.png"


def plot_curves(records: Sequence[dict[str, Any]], kind: BenchmarkKind, path: Path, title: str) -> None:
    """Two panels: the training loss (MSE on regression) per logged step, against epochs;
    the headline metric per epoch, training mean and validation (and the pre-update score
    on meta-train tasks where the kind has one), on whole-epoch ticks; percentages for
    accuracies."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    objective = "loss" if any("loss" in r for r in steps) else kind.metric
    percent = kind.metric == "accuracy"
    scale, unit = (100.0, " (%)") if percent else (1.0, "")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    # a step record's `epoch` is the 1-based epoch it falls in; epoch records mark the ends
    per_epoch = {r["epoch"]: r["step"] for r in epochs}
    first = per_epoch.get(1)
    if steps and first:
        left.plot([r["step"] / first for r in steps if objective in r],
                  [r[objective] for r in steps if objective in r], color="C0", linewidth=1)
    left.set_xlabel("epoch")
    left.set_ylabel(f"training {objective}")
    left.set_title(f"training {objective} per logged step", fontsize=10)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves = [(f"train_{kind.metric}", "train (epoch mean)", "-"), (kind.validation_curve, "validation", "-")]
    if kind.pre_update_curve is not None:
        curves.append((kind.pre_update_curve, "train pre-update", "--"))
    for key, label, style in curves:
        points = [(r["epoch"], scale * r[key]) for r in epochs if key in r]
        if points:
            right.plot(*zip(*points), style, marker="o", markersize=3, label=label)
    right.set_xlabel("epoch")
    right.set_ylabel(kind.metric + unit)
    right.set_title(f"{kind.metric} per epoch", fontsize=10)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    if right.lines:
        right.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
