"""Where a run's metrics go besides metrics.jsonl, which stays the source of truth.

Every record the run appends to metrics.jsonl goes to each sink as it is written: a step
record ({"kind": "step", "step", "epoch", "loss", ...}) or an epoch record (train_*, val_*,
policy_* values). Sinks:
- metrics.csv, always: metrics.jsonl as a table (one row per record, a column per key),
  rewritten at each epoch end and at the end, so it always matches the JSON lines;
- TensorBoard (`--tensorboard`, needs `pip install metaaugment[tensorboard]`): event files
  in the run folder's tensorboard/, one scalar per value tagged KIND/KEY at the record's
  step; the run's figures as images at the end;
- Weights & Biases (`--wandb`, `pip install metaaugment[wandb]`; WANDB_MODE=offline works
  without an account): the same values, the W&B run id kept in wandb.json so `--resume`
  continues the same W&B run.

The run's manifest lists exactly what each sink wrote (each event file; W&B's folder for this
run and its links), so `--overwrite` removes those and leaves anything else a user put in
tensorboard/ or wandb/. A tool folder that is a link is refused: a run never writes through
one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Sequence

from metaaugment.infra.dependencies import require
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import read_capped, write_json, write_text
from metaaugment.infra.schema import short
from metaaugment.run.folder import TREE_SUFFIX, RunDirectory

CSV_FILE, TENSORBOARD_DIR, WANDB_DIR, WANDB_FILE = "metrics.csv", "tensorboard", "wandb", "wandb.json"
POSITION_KEYS = ("kind", "step", "epoch")
STEP_METRIC = "train_step"
WANDB_ID = re.compile(r"^[a-z0-9]{1,64}$")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics record as KIND/KEY tags (position keys left out)."""
    kind = record.get("kind", "step")
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in POSITION_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def metrics_csv(records: Sequence[dict[str, Any]]) -> str:
    """metrics.jsonl as CSV: kind, step, epoch, then every other key in order of appearance."""
    columns = list(POSITION_KEYS)
    for record in records:
        columns += [key for key in record if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


class Sinks:
    """The run's extra outputs, opened by the main process once the run knows where it
    starts (`resumed_step`: the checkpoint's step, 0 for a fresh start)."""

    def __init__(self, run_dir: RunDirectory, config: dict[str, Any], resumed_step: int, *,
                 tensorboard: bool = False, wandb: bool = False):
        self.run_dir = run_dir
        self.tensorboard = _open_tensorboard(run_dir, resumed_step) if tensorboard else None
        self.wandb = _open_wandb(run_dir, config) if wandb else None
        run_dir.record(CSV_FILE)

    def record(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record, just appended."""
        values = scalars(record)
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, record["step"])
        if self.wandb is not None and values:
            self.wandb.log({**values, STEP_METRIC: record["step"]})
        if record.get("kind") == "epoch":
            self.flush()

    def flush(self) -> None:
        """Rewrite metrics.csv from metrics.jsonl; flush the event files."""
        write_text(self.run_dir.path / CSV_FILE, metrics_csv(self.run_dir.read_metrics()))
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def test_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """The run's final test metrics (results.json's), as `test/KEY` scalars at `step`, and
        in W&B's run summary."""
        values = {f"test/{key}": float(value) for key, value in metrics.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb is not None and values:
            self.wandb.log({**values, STEP_METRIC: step})
            self.wandb.summary.update(values)

    def figures(self, names: Sequence[str], step: int) -> None:
        """The run's figures (PNG files in the run folder) as images at `step`."""
        pngs = [self.run_dir.path / name for name in names if name.endswith(".png")]
        if self.tensorboard is not None and pngs:
            import numpy as np
            from PIL import Image

            for path in pngs:
                image = np.asarray(Image.open(path).convert("RGB"))
                self.tensorboard.add_image(f"figures/{path.stem}", image, step, dataformats="HWC")
        if self.wandb is not None and pngs:
            import wandb

            self.wandb.log({**{f"figures/{path.stem}": wandb.Image(str(path)) for path in pngs}, STEP_METRIC: step})

    def close(self) -> None:
        self.flush()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _tool_folder(run_dir: RunDirectory, name: str) -> Path:
    """run_dir/name, a real folder (a link in its place is refused), recorded as the run's
    own (removed by --overwrite once empty of other files) when the run makes it."""
    folder = run_dir.path / name
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{folder} is a link or a file: a run writes its {name} files only into a folder of its own")
    if not folder.exists():
        folder.mkdir()
        run_dir.record(name + "/")
    return folder


def _new_entries(folder: Path, before: set[str]) -> list[str]:
    """Names that appeared directly in `folder` since `before` was listed."""
    return sorted(p.name for p in folder.iterdir() if p.name not in before) if folder.is_dir() else []


def check_available(tensorboard: bool, wandb: bool) -> None:
    """A UserError naming the package to install, before a run starts, for a sink whose
    package is missing."""
    if tensorboard:
        require("tensorboard", "--tensorboard")
    if wandb:
        require("wandb", "--wandb")


def _open_tensorboard(run_dir: RunDirectory, resumed_step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    folder = _tool_folder(run_dir, TENSORBOARD_DIR)
    before = {p.name for p in folder.iterdir()}
    # events past the checkpoint were written by the interrupted process and come again:
    # TensorBoard drops every earlier event at a step >= purge_step
    writer = SummaryWriter(str(folder), purge_step=resumed_step + 1)
    run_dir.record(*(f"{TENSORBOARD_DIR}/{name}" for name in _new_entries(folder, before)))  # its event file
    return writer


def _stored_wandb_id(path: Path) -> str | None:
    """The W&B run id of wandb.json, or None when there is none; a UserError when it is damaged."""
    if not path.is_file():
        return None
    text = read_capped(path, "W&B run record", 4096).decode("utf-8", errors="replace")
    try:
        run_id = json.loads(text).get("id")
    except (json.JSONDecodeError, RecursionError, AttributeError):
        run_id = None
    if not isinstance(run_id, str) or not WANDB_ID.match(run_id):
        raise UserError(f"{path} is damaged (it must hold {{\"id\": a W&B run id of lowercase letters and digits}}, "
                        f"got {short(text)}); remove it to start a new W&B run")
    return run_id


def _open_wandb(run_dir: RunDirectory, config: dict[str, Any]) -> Any:
    import wandb

    stored = run_dir.path / WANDB_FILE
    run_id = _stored_wandb_id(stored)
    folder = _tool_folder(run_dir, WANDB_DIR)
    before = {p.name for p in folder.iterdir()}
    if run_id is None:
        run_id = uuid.uuid4().hex[:12]
        write_json(stored, {"id": run_id})
        run_dir.record(WANDB_FILE)
    name = f"{config['benchmark']}/{config['policy']}/seed{config['seed']}"
    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "metaaugment"), dir=str(run_dir.path), id=run_id,
                         resume="allow", name=name, config=config, settings=wandb.Settings(silent=True))
    except Exception as error:  # no login, no network: one line
        raise UserError(f"--wandb could not start a W&B run ({type(error).__name__}: {' '.join(str(error).split())}); "
                        f"log in with `wandb login`, or set WANDB_MODE=offline") from None
    # what wandb.init made for this run: its run folder (named after the run id) whole, and
    # the links it keeps beside it (latest-run, debug logs)
    # (a second start in the same second gets a suffix: run-DATE-ID-1)
    run_dir.record(*(f"{WANDB_DIR}/{name}" + (TREE_SUFFIX if f"-{run_id}" in name else "")
                     for name in _new_entries(folder, before)))
    # the run's own step as the x axis: after --resume, steps repeat from the checkpoint's,
    # which W&B's internal step (always increasing) would drop
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC)
    return run
