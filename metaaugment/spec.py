"""What a benchmark is: its TaskSpec (inputs and outputs) and its kind (how runs on it are
trained, scored and reported).

`KINDS` is the one table of the benchmark kinds. The run loop, `compare`, the progress bar
and the CLI's result table all read it: which metric a run is selected and reported by,
whether higher is better, whether it trains on mini-batches or few-shot episodes, and the
columns that summarize a finished run.
"""
from __future__ import annotations

from dataclasses import dataclass

from metaaugment.infra.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a benchmark's inputs and outputs.

    num_classes: number of classes the model predicts; None when it predicts one real value
        per input (regression). A few-shot dataset's spec leaves it None: its tasks' spec
        gives the ways (`FewShotData.task_spec`).
    input_shape: shape of one input, (C, H, W) for images.
    mean, std: per-channel statistics models use to standardize [0, 1] inputs.

    The benchmark's kind (how runs on it are trained and reported) is the Benchmark's, not
    the spec's: `metaaugment.tasks.Benchmark.kind`.
    """

    num_classes: int | None
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)

    @property
    def channels(self) -> int:
        """Number of input channels (first entry of input_shape)."""
        return self.input_shape[0]

    @property
    def predicts_values(self) -> bool:
        """Whether a model for this spec predicts real values (regression), not classes."""
        return self.num_classes is None


@dataclass(frozen=True)
class Column:
    """One summary value of a finished run: a key of results.json's metrics, its title, and
    whether it is a fraction shown in percent. A `*_ci95` column is the half-width of the
    95% confidence interval of the column before it."""

    metric: str
    title: str
    percent: bool


@dataclass(frozen=True)
class BenchmarkKind:
    """How runs on one kind of benchmark are trained, scored and reported.

    metric: the score every evaluation reports and the best model is selected by
            ("accuracy" or "mse"); validation records carry it as val_<metric>.
    higher_is_better: the direction of `metric`.
    episodic: trained on few-shot episodes by a meta-learner (else on mini-batches).
    columns: the summary of a finished run, headline first (compare's table and plot,
            the CLI's result table).
    pre_update_curve: the metrics.jsonl key of the pre-update score on meta-train tasks,
            drawn beside the validation curve (high values mean memorization), if any.
    """

    name: str
    metric: str
    higher_is_better: bool
    episodic: bool
    columns: tuple[Column, ...]
    pre_update_curve: str | None = None

    @property
    def validation_curve(self) -> str:
        """The metrics.jsonl key of the validation score per epoch."""
        return f"val_{self.metric}"

    @property
    def best_metric(self) -> str:
        """The results.json key of the best validation score."""
        return f"best_val_{self.metric}"

    def better(self, value: float, best: float | None) -> bool:
        """Whether `value` improves on `best` (None: nothing yet)."""
        return best is None or (value > best if self.higher_is_better else value < best)


KINDS: dict[str, BenchmarkKind] = {kind.name: kind for kind in (
    BenchmarkKind("classification", "accuracy", True, episodic=False, columns=(
        Column("test_accuracy", "test accuracy", True),
        Column("best_val_accuracy", "best val accuracy", True),
        Column("test_loss", "test loss", False),
    )),
    BenchmarkKind("few-shot", "accuracy", True, episodic=True, pre_update_curve="train_pre_accuracy", columns=(
        Column("test_accuracy", "meta-test accuracy", True),
        Column("test_accuracy_ci95", "± 95% CI", True),
        Column("test_pre_accuracy", "meta-test pre-update accuracy", True),
        Column("final_train_pre_accuracy", "train pre-update accuracy", True),
        Column("final_train_accuracy", "train post-update accuracy", True),
        Column("best_val_accuracy", "best val accuracy", True),
    )),
    BenchmarkKind("regression", "mse", False, episodic=True, pre_update_curve="train_pre_mse", columns=(
        Column("test_mse", "meta-test MSE", False),
        Column("test_mse_ci95", "± 95% CI", False),
        Column("test_pre_mse", "meta-test pre-update MSE", False),
        Column("final_train_pre_mse", "train pre-update MSE", False),
        Column("final_train_mse", "train post-update MSE", False),
        Column("best_val_mse", "best val MSE", False),
    )),
)}


def benchmark_kind(name: str) -> BenchmarkKind:
    """The row of `KINDS` named `name`."""
    if name not in KINDS:
        raise UserError(f"unknown benchmark kind '{name}'; choose from: {', '.join(KINDS)}")
    return KINDS[name]
