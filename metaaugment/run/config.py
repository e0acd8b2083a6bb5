"""RunConfig: everything that defines a run, with the benchmark's defaults filled in by `resolve`."""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from metaaugment.errors import UserError
from metaaugment.registry import create_benchmark
from metaaugment.schema import SchemaError, check_value
from metaaugment.spec import benchmark_kind

DEFAULT_VAL_TASKS = 100
DEFAULT_TEST_TASKS = 600  # the usual few-shot protocol: mean and 95% CI over 600 test tasks
EPISODIC_FIELDS = ("ways", "shots", "query_shots", "steps_per_epoch", "val_tasks", "test_tasks")


def options_of(bench: Any) -> Any:
    """The class of benchmark `bench`'s own options (--benchmark-set), or a UserError when it has none."""
    if bench.options is None:
        raise UserError(f"--benchmark-set: benchmark '{bench.name}' has no options (cifar10, cifar100, imagenet and "
                        f"image-classification-folder have; see metaaug list benchmarks NAME)")
    return bench.options

@dataclass
class RunConfig:
    """Everything that defines a run. None fields take the benchmark's defaults (`resolve`)."""

    benchmark: str = "digits"
    policy: str = "none"
    policy_options: dict[str, Any] = field(default_factory=dict)
    learner: str | None = None
    learner_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    data_root: str = "data"
    eval_every: int = 1
    checkpoint_every: int = 100
    log_every: int = 10
    # Episodic (few-shot) benchmarks only: N-way K-shot with Q query samples per class,
    # meta-steps per epoch, and the number of tasks for validation and the final test.
    ways: int | None = None
    shots: int | None = None
    query_shots: int | None = None
    steps_per_epoch: int | None = None
    val_tasks: int | None = None
    test_tasks: int | None = None
    # a finished run of the same policy whose learned policy is reused, frozen (MetaAugment's transfer)
    policy_from: str | None = None
    image_size: int | None = None  # benchmarks that resize images (image-folder)
    benchmark_options: dict[str, Any] = field(default_factory=dict)  # the benchmark's own (--benchmark-set)
    val_size: int | None = None  # benchmarks that hold validation images out of train (CIFAR)
    workers: int = 0  # processes decoding a streamed benchmark's images (imagenet, image-classification-folder)
    # mini-batch benchmarks: the task network's precision ("32", "bf16", "16"), memory format, torch.compile
    precision: str = "32"
    channels_last: bool = False
    compile: bool = False
    # where metrics go besides metrics.jsonl and metrics.csv (run.sinks); not part of a run's identity
    tensorboard: bool = False
    wandb: bool = False

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
        """A copy with the benchmark's defaults filled in (benchmark name checked here)."""
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
        same_defaults = self.learner in (None, bench.default_learner)
        same_model = self.model in (None, bench.default_model)
        return dataclasses.replace(
            self,
            learner=self.learner or bench.default_learner,
            # a benchmark's learner defaults (e.g. MAML's inner lr) only suit its default learner
            learner_options={**(bench.default_learner_options if same_defaults else {}), **self.learner_options},
            model=self.model or bench.default_model,
            model_options={**(bench.default_model_options if same_model else {}), **self.model_options},
            policy_options={**bench.default_policy_options.get(self.policy, {}), **self.policy_options},
            epochs=self.epochs or bench.default_epochs,
            batch_size=self.batch_size or bench.default_batch_size,
            **episodic,
        )

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
