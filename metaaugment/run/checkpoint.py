"""Checkpoint files: the one place that writes and reads them (`--resume` and `--policy-from`).

A checkpoint is one torch file holding everything a run needs to continue exactly (model,
learner, policy, data position, every RNG) under a format tag, written atomically so a
crash during the write leaves the previous checkpoint intact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_torch, save_torch
from metaaugment.infra.schema import SchemaError, check_value, short
from metaaugment.infra.trust import refuse_code_references

CHECKPOINT_FORMAT = "metaaugment-checkpoint/2"
# What the run loop restores from a checkpoint: each entry's type (state dicts are mappings).
CHECKPOINT_SCHEMA = {"training": dict[str, object], "model": dict[str, torch.Tensor],
                     "best_model": dict[str, torch.Tensor] | None, "learner": dict[str, object],
                     "policy": dict[str, object], "data": dict[str, object], "rng": dict[str, object],
                     "grad_scaler": dict[str, object] | None, "transfer_source": dict[str, object] | None}


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
    except UserError:  # not a regular file
        raise
    except Exception as error:  # truncated, empty, garbage, or objects beyond weights_only
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"{path} cannot be read as a checkpoint ({type(error).__name__}: {reason}); "
                        "it is damaged or was not written by metaaugment") from None
    if not isinstance(contents, dict) or contents.get("format") != CHECKPOINT_FORMAT:
        found = contents.get("format", "no format tag") if isinstance(contents, dict) else type(contents).__name__
        raise UserError(f"{path} is not a checkpoint this version of metaaugment can read ({short(found)}; expected "
                        f"{CHECKPOINT_FORMAT}); rerun without --resume, with --overwrite")
    try:
        for key, kind in CHECKPOINT_SCHEMA.items():
            check_value(contents.get(key), kind, key)
    except SchemaError as error:
        raise UserError(f"{path} is damaged ({error}); rerun without --resume, with --overwrite") from None
    return contents


def read_finished_run(folder: Path, command: str = "--policy-from", *, trust_code: bool = False,
                      imported: tuple[str, ...] = ("benchmark", "policy", "learner", "model")
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, final checkpoint) of a finished run folder, through the same readers as
    `--resume` (both checked against their schemas); a UserError naming `command` when the
    folder holds no finished run, or when its config names code in one of the `imported`
    settings the caller will build and the user has not passed --trust-code."""
    from metaaugment.run.folder import RunDirectory

    run = RunDirectory(Path(folder))
    if run.path.is_dir():
        run.refuse_odd_members()  # a link or FIFO in a member's place is named, never read
    if not run.finished or not run.checkpoint_path.is_file():
        raise UserError(f"{command} {folder}: not a finished run folder (no results.json / checkpoint.pt)")
    config = run.read_config()
    refuse_code_references(config, f"{command} {folder}: its {run.config_path.name}", trust_code=trust_code,
                           keys=imported)
    return config, load_checkpoint(run.checkpoint_path)
