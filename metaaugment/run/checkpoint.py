"""Checkpoint files: the one place that writes and reads them (`--resume` and `--policy-from`).

A checkpoint is one torch file holding everything a run needs to continue exactly (model,
learner, policy, data position, every RNG) under a format tag, written atomically so a
crash during the write leaves the previous checkpoint intact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from metaaugment.errors import UserError
from metaaugment.files import load_torch, save_torch

CHECKPOINT_FORMAT = "metaaugment-checkpoint/2"


def save_checkpoint(path: Path, contents: dict[str, Any]) -> None:
    """Atomically write `contents` (a dict of state dicts and plain values) with the format tag."""
    save_torch(Path(path), {"format": CHECKPOINT_FORMAT, **contents})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The contents saved by `save_checkpoint`, loaded on the CPU with weights_only=True (a
    crafted file cannot run code); a UserError for a damaged file or one of another format."""
    # On the CPU: load_state_dict copies tensors onto the model's and policy's device, the
    # optimizer casts its state to its parameters' device, and RNG states must be CPU byte
    # tensors (CUDA generator states included).
    try:
        contents = load_torch(path)
    except Exception as error:  # truncated, empty, garbage, or objects beyond weights_only
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: {reason}); "
                        "it is damaged or was not written by metaaugment") from None
    if not isinstance(contents, dict) or contents.get("format") != CHECKPOINT_FORMAT:
        found = contents.get("format", "no format tag") if isinstance(contents, dict) else type(contents).__name__
        raise UserError(f"{path} is not a checkpoint this version of metaaugment can read ({found}; expected "
                        f"{CHECKPOINT_FORMAT}); rerun without --resume, with --overwrite")
    return contents


def read_finished_run(folder: Path, command: str = "--policy-from") -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, final checkpoint) of a finished run folder, through the same reader as
    `--resume`; a UserError naming `command` when the folder holds no finished run."""
    from metaaugment.run.folder import RunDirectory

    run = RunDirectory(Path(folder))
    if not run.finished or not run.checkpoint_path.is_file():
        raise UserError(f"{command} {folder}: not a finished run folder (no results.json / checkpoint.pt)")
    return run.read_config(), load_checkpoint(run.checkpoint_path)
