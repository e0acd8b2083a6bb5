"""RunConfig: everything that defines a run, with the benchmark's defaults filled in by `resolve`."""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from metaaugment.infra.errors import UserError
from metaaugment.infra.machine import machine_memory_bytes
from metaaugment.infra.schema import SchemaError, check_value
from metaaugment.registry import create_benchmark
from metaaugment.spec import benchmark_kind

DEFAULT_VAL_TASKS = 100
DEFAULT_TEST_TASKS = 600  # the usual few-shot protocol: mean and 95% CI over 600 test tasks
EPISODIC_FIELDS = ("ways", "shots", "query_shots", "steps_per_epoch", "val_tasks", "test_tasks")


def options_of(bench: Any) -> Any:
    """The class of benchmark `bench`'s own options (--benchmark-set), or a UserError when it has none."""
    if bench.options is None:
        raise UserError(f"--benchmark-set: benchmark '{bench.name}' has no options (see metaaug list "
                        f"benchmarks NAME)")
    return bench.options

RUN, COMPARE = "run", "compare"


def setting(default: Any = None, help: str = "", *, flag: str | None = None, short: str | None = None,
            envvar: str | None = None, commands: tuple[str, ...] = (RUN, COMPARE), argument: bool = False,
            option_list: bool = False, default_factory: Any = None) -> Any:
    """A RunConfig field with what the command line shows of it (read by `cli.settings_options`):
    `help`, its `flag` (default --field-name), a `short` flag, an `envvar`, the `commands`
    that take it (none: files only), `argument` (positional), `option_list` (a repeatable
    key=value option filling an options mapping). Adding a run setting is adding one field."""
    metadata = {"help": help, "flag": flag, "short": short, "envvar": envvar, "commands": commands,
                "argument": argument, "option_list": option_list}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def cli_metadata(config_field: dataclasses.Field) -> dict[str, Any]:
    """The command-line metadata `setting` gave a field (commands () when it gave none)."""
    return {"commands": (), **config_field.metadata}


def check_batch_fits(side: int, batch_size: int, channels: int = 3) -> None:
    """A UserError, with the estimate, when one batch of float32 images of `side` x `side`
    pixels (padding included) would not fit in this machine's memory: the workers decode
    each batch in host memory, whatever device trains on it."""
    machine = machine_memory_bytes()
    if machine is None:
        return
    needed = batch_size * channels * side * side * 4
    if needed > machine:
        raise UserError(f"--image-size with --batch-size {batch_size}: one batch of {side} x {side} images (padding "
                        f"included) is {needed / 1e9:,.1f} GB as float32, more than this machine's "
                        f"{machine / 1e9:.0f} GB; choose a smaller --image-size, padding or --batch-size")


@dataclass
class RunConfig:
    """Everything that defines a run. None fields take the benchmark's defaults (`resolve`).

    Every field is declared once, here: its type (the schema of config and sweep files), its
    default and its command-line option (`setting`: `metaaug run` and `compare` generate their
    options from these fields)."""

    benchmark: str = setting("digits", "Benchmark name (or module.path:Name); see `metaaug list`. Optional with "
                             "--config (run) or a --sweep file that names one (compare).", argument=True)
    policy: str = setting("none", "Augmentation policy (or module.path:Name); see `metaaug list`.", short="-p",
                          commands=(RUN,))
    policy_options: dict[str, Any] = setting(help="Policy option key=value (repeatable).", flag="--set", short="-s",
                                             commands=(RUN,), option_list=True, default_factory=dict)
    learner: str | None = setting(None, "Learner name (default: the benchmark's); see `metaaug list`.")
    learner_options: dict[str, Any] = setting(help="Learner option key=value (repeatable).", flag="--learner-set",
                                              option_list=True, default_factory=dict)
    model: str | None = setting(None, "Model name (default: the benchmark's); see `metaaug list`.")
    model_options: dict[str, Any] = setting(help="Model option key=value (repeatable).", flag="--model-set",
                                            option_list=True, default_factory=dict)
    epochs: int | None = setting(None, "Training epochs (default: the benchmark's).")
    batch_size: int | None = setting(None, "Mini-batch size; tasks per meta-batch on few-shot benchmarks (default: "
                                     "the benchmark's).")
    seed: int = setting(0, "Random seed; the same seed gives the same results.", commands=(RUN,))
    device: str = setting("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    data_root: str = setting("data", "Folder holding on-disk datasets (CIFAR, ...).", envvar="METAAUG_DATA_ROOT")
    eval_every: int = setting(1, "Validate every N epochs.")
    checkpoint_every: int = setting(100, "Checkpoint every N steps (and every epoch end).")
    log_every: int = setting(10, commands=())  # steps between logged training metrics (files only)
    # Episodic (few-shot) benchmarks only: N-way K-shot with Q query samples per class,
    # meta-steps per epoch, and the number of tasks for validation and the final test.
    ways: int | None = setting(None, "Few-shot: N classes per task.")
    shots: int | None = setting(None, "Few-shot: K support samples per class.")
    query_shots: int | None = setting(None, "Few-shot: query samples per class.")
    steps_per_epoch: int | None = setting(None, "Few-shot: meta-steps per epoch.")
    val_tasks: int | None = setting(None, "Few-shot: validation tasks per evaluation (100).")
    test_tasks: int | None = setting(None, "Few-shot: meta-test tasks (600).")
    # a finished run of the same policy whose learned policy is reused, frozen (MetaAugment's transfer)
    policy_from: str | None = setting(None, "metaaugment, adaaug: reuse the learned policy and the task network of "
                                      "this finished run of the same policy (frozen) to train a new network.",
                                      commands=(RUN,))
    image_size: int | None = setting(None, "The square size images are resized and cropped to: image-folder (84), "
                                     "imagenet and image-classification-folder (224).")
    benchmark_options: dict[str, Any] = setting(
        help="Benchmark option key=value (repeatable): CIFAR's padding and flip, the streamed benchmarks' crop, "
        "crop_scale, crop_ratio, padding and flip (crop=pad: CIFAR's pad-and-crop for small photos); reduced data: "
        "train_per_class=N (CIFAR, class folders), meta_train_classes=N (few-shot); see metaaug list "
        "benchmarks NAME.", flag="--benchmark-set",
        option_list=True, default_factory=dict)
    val_size: int | None = setting(None, "CIFAR: images held out of train for validation (5000; MetaAugment's "
                                   "paper: 1000).")
    workers: int = setting(0, "Streamed benchmarks (imagenet, image-classification-folder): processes decoding "
                           "images; the results do not depend on it.")
    # mini-batch benchmarks: the task network's precision ("32", "bf16", "16"), memory format, torch.compile
    precision: str = setting("32", "Mini-batch benchmarks: 32, bf16 or 16 (autocast; 16 with loss scaling).")
    channels_last: bool = setting(False, "Mini-batch benchmarks: the task network in channels-last memory format.")
    compile: bool = setting(False, "Mini-batch benchmarks: torch.compile the task network.")
    # where metrics go besides metrics.jsonl and metrics.csv (run.sinks); not part of a run's identity
    tensorboard: bool = setting(False, "Also log metrics (and the figures) to TensorBoard event files in the run "
                                "folder's tensorboard/ (pip install 'metaaugment[tensorboard]').")
    wandb: bool = setting(False, "Also log to Weights & Biases (pip install 'metaaugment[wandb]'; WANDB_MODE=offline "
                          "needs no account; WANDB_PROJECT names the project, default metaaugment). --resume "
                          "continues the same W&B run.")

    @classmethod
    @functools.cache
    def field_types(cls) -> dict[str, Any]:
        """Each field's declared type: the schema of config and sweep files."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def check_settings(cls, settings: dict[str, Any], where: str) -> dict[str, Any]:
        """`settings` (field name -> value, e.g. read from a file) held to the fields' types:
        a UserError "WHERE: KEY must be ... (got ...)" for an unknown key or a value of another
        type; option mappings copied, their lists as tuples (options take tuples)."""
        types = cls.field_types()
        checked: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in types:
                raise UserError(f"{where} has unknown setting {key!r}; valid: {', '.join(types)}")
            try:
                checked[key] = check_value(value, types[key], key)
            except SchemaError as error:
                raise UserError(f"{where}: {error}") from None
            if key.endswith("_options"):
                checked[key] = {k: tuple(v) if isinstance(v, list) else v for k, v in checked[key].items()}
        return checked

    def validate(self) -> None:
        """Raise UserError for values no run can use: a field of another type than declared, or
        out of its range."""
        self.check_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "run configuration")
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every", "ways", "shots",
                     "query_shots", "steps_per_epoch", "val_tasks", "test_tasks", "image_size", "val_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer (got {value})")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise UserError(f"--workers must be a non-negative integer (got {self.workers})")
        if self.precision not in ("32", "bf16", "16"):
            raise UserError(f"--precision must be 32, bf16 or 16 (got {self.precision})")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be an integer in [0, 2**32) (got {self.seed})")

    def resolve(self) -> "RunConfig":
        """A copy with the benchmark's defaults filled in (benchmark name checked here); a
        resolved config is its own resolution, so a run is resolved once however many layers
        ask (a `dataclasses.replace` of it is a new, unresolved config)."""
        if self.__dict__.get("_resolved"):
            return self
        self.validate()
        bench = create_benchmark(self.benchmark)
        episodic: dict[str, Any] = {}
        if benchmark_kind(bench.kind).episodic:
            episodic = dict(ways=self.ways or bench.default_ways, shots=self.shots or bench.default_shots,
                            query_shots=self.query_shots or bench.default_query_shots,
                            steps_per_epoch=self.steps_per_epoch or bench.default_steps_per_epoch,
                            val_tasks=self.val_tasks or DEFAULT_VAL_TASKS,
                            test_tasks=self.test_tasks or DEFAULT_TEST_TASKS)
        else:
            given = [n for n in EPISODIC_FIELDS if getattr(self, n) is not None]
            if given:
                raise UserError(f"--{given[0].replace('_', '-')} applies to few-shot benchmarks; "
                                f"'{self.benchmark}' trains on mini-batches")
        if benchmark_kind(bench.kind).episodic:
            chosen = [flag for flag, on in (("--precision", self.precision != "32"),
                                            ("--channels-last", self.channels_last), ("--compile", self.compile)) if on]
            if chosen:
                raise UserError(f"{chosen[0]} applies to mini-batch benchmarks; '{self.benchmark}' is few-shot")
        if self.image_size is not None and not bench.accepts_image_size:
            raise UserError(f"--image-size applies to benchmarks that resize images (image-folder, imagenet, "
                            f"image-classification-folder), "
                            f"not '{self.benchmark}'")
        if self.val_size is not None and not bench.accepts_val_size:
            raise UserError(f"--val-size applies to benchmarks that split validation off train (cifar10, cifar100), "
                            f"not '{self.benchmark}'")
        if self.benchmark_options:
            from metaaugment.registry import BENCHMARKS

            BENCHMARKS.create_options(self.benchmark, options_of(bench), self.benchmark_options)  # checked now
        resolved = dataclasses.replace(
            self,
            learner=self.learner or bench.default_learner,
            learner_options={**bench.default_options_for("learner", self.learner), **self.learner_options},
            model=self.model or bench.default_model,
            model_options={**bench.default_options_for("model", self.model), **self.model_options},
            policy_options={**bench.default_policy_options.get(self.policy, {}), **self.policy_options},
            epochs=self.epochs or bench.default_epochs,
            batch_size=self.batch_size or bench.default_batch_size,
            **episodic,
        )
        if resolved.image_size is not None:
            padding = resolved.benchmark_options.get("padding", 0)
            check_batch_fits(resolved.image_size + 2 * (padding if isinstance(padding, int) else 0),
                             resolved.batch_size)
        resolved.__dict__["_resolved"] = True  # not a field: not in to_dict, equality or replace
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what config.json holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict[str, Any], where: str = "run configuration") -> "RunConfig":
        """A RunConfig from config.json or a config file's settings, held to the fields' types
        (`check_settings`; option names and values are checked later, by the factories)."""
        if not isinstance(settings, dict):
            raise UserError(f"{where} must be a mapping of settings, not {type(settings).__name__}")
        return cls(**cls.check_settings(settings, where))
