"""Benchmark: a named dataset with its splits and the defaults of a sensible run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Benchmark:
    """A dataset plus run defaults; `load(data_root)` returns its splits.

    kind: a key of metaaugment.spec.KINDS: "classification" (mini-batches; load returns
          ClassificationData), "few-shot" (episodes of N-way K-shot classification; load
          returns FewShotData) or "regression" (episodes of few-shot regression; load
          returns RegressionTasks).
    load: data_root -> the data; raises UserError naming the missing files.
    default_batch_size: samples per mini-batch, or tasks per meta-batch for episodic kinds.
    default_ways / default_shots / default_query_shots / default_steps_per_epoch: the
          episodic defaults (N classes, K support and Q query samples per class, and the
          meta-steps one "epoch" counts).
    default_policy_options: policy name -> the options that policy takes by default here
          (e.g. MetaAugment's 4 transformations per ImageNet sample); --set overrides them.
    accepts_image_size: load takes an `image_size` keyword (--image-size).
    accepts_val_size: load takes a `val_size` keyword, the images held out of train (--val-size).
    options: the class of the benchmark's own options (--benchmark-set key=value; its keyword
          options, typed and documented as a policy's), built and given to load as
          `options`; None when the benchmark has none.
    download: data_root -> the entries it fetched into data_root (`--download`; none when
          they were there already); None when the data has no public download or needs none.
    download_instead: what to do instead of --download (no public download), or "" when the
          benchmark is embedded and needs no data.
    """

    name: str
    load: Callable[[Path], Any]
    default_model: str
    default_epochs: int
    default_batch_size: int
    default_learner: str = "supervised"
    default_learner_options: dict[str, Any] = field(default_factory=dict)
    default_model_options: dict[str, Any] = field(default_factory=dict)
    default_policy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepts_image_size: bool = False
    accepts_val_size: bool = False
    options: Callable[..., Any] | None = None
    kind: str = "classification"
    default_ways: int | None = None
    default_shots: int | None = None
    default_query_shots: int | None = None
    default_steps_per_epoch: int | None = None
    download: Callable[[Path], list[str]] | None = None
    download_instead: str = ""

    def default_options_for(self, role: str, name: str | None) -> dict[str, Any]:
        """The options this benchmark gives its `role` ("learner" or "model") when the run's is
        `name` (None: the default): its defaults suit its own default learner and model only
        (MAML's inner rate means nothing to ProtoNets), so another name gets none."""
        default_name, options = {"learner": (self.default_learner, self.default_learner_options),
                                 "model": (self.default_model, self.default_model_options)}[role]
        return dict(options) if name in (None, default_name) else {}
