"""Evaluate a finished run's model again, on its own benchmark or another with the same inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from metaaugment.infra.errors import UserError
from metaaugment.run.checkpoint import read_finished_run
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory

SPLITS = ("test", "val")


def restored_trainer(folder: Path, command: str, *, benchmark: str | None = None, device: str = "auto",
                     data_root: str | None = None, console: Console | None = None,
                     trust_code: bool = False) -> tuple[Any, dict[str, Any]]:
    """A Trainer of the finished run in `folder` (writing nothing), its model holding the
    weights the run was tested with (the best-validation model where the run tests that
    one), and the run's final checkpoint. The folder's config.json is a file: a code
    reference in it is refused unless `trust_code` (metaaugment.infra.trust)."""
    from metaaugment.run.loop import Trainer

    settings, checkpoint = read_finished_run(Path(folder), command, trust_code=trust_code)
    settings = {**settings, "device": device, "policy_from": None}  # the transfer source is not needed again
    if data_root is not None:
        settings["data_root"] = data_root
    original = settings["benchmark"]
    if benchmark is not None:
        settings["benchmark"] = benchmark
    config = RunConfig.from_dict(settings).resolve()
    trainer = Trainer(config, RunDirectory(Path(folder)), console=console, show_progress=False, trust_code=trust_code,
                      weights_from_file=True)
    weights = checkpoint["best_model"] if trainer.strategy.tests_best_model and checkpoint.get("best_model") \
        else checkpoint["model"]
    try:
        trainer.model.load_state_dict(weights)
    except RuntimeError as error:
        raise UserError(f"{command}: the model of {folder} (trained on {original}) does not fit benchmark "
                        f"'{config.benchmark}': {' '.join(str(error).split())[:160]}") from None
    return trainer, checkpoint


def evaluate_run(folder: Path, split: str = "test", *, benchmark: str | None = None, device: str = "auto",
                 data_root: str | None = None, console: Console | None = None,
                 trust_code: bool = False) -> dict[str, Any]:
    """The metrics of a finished run's tested model on `split` ("test" or "val"), computed
    again: on "test" the same dict as its results.json "metrics" (few-shot: the same fixed
    tasks, mean and 95% CI), with the run's training figures (best validation, steps)
    carried over; on "val" the validation scores as `val_*`. `benchmark` evaluates on
    another benchmark whose inputs and classes fit the model."""
    from metaaugment.run.loop import TrainingState

    if split not in SPLITS:
        raise UserError(f"--split must be test or val (got {split!r})")
    trainer, checkpoint = restored_trainer(folder, "eval", benchmark=benchmark, device=device, data_root=data_root,
                                           console=console, trust_code=trust_code)
    scores = trainer.strategy.evaluate(split)
    if split == "val":
        return {f"val_{key}": value for key, value in scores.items()}
    try:
        state = TrainingState(**checkpoint["training"])
    except TypeError as error:
        raise UserError(f"eval {folder}: its checkpoint's training state is damaged ({error})") from None
    return trainer.strategy.result_metrics(scores, state)
