"""`metaaug export`: write what a finished run learned as files that load without the run
folder (their format and loaders: `metaaugment.export`)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

from metaaugment.export import EXPORT_FORMAT, MODEL_FILE, POLICY_FILE
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import TEMPORARY_SUFFIX, refuse_linked_folders, save_torch
from metaaugment.run.evaluate import restored_trainer


def write_together(out: Path, paths: list[Path], contents: list[object]) -> None:
    """Write each of `contents` to its path in `out`, all or none: into a temporary folder
    beside `out` first, then moved into place by renames (a disk that fills at the second
    file leaves nothing: no first file, no folder)."""
    created = [p for p in (out, *out.parents) if not p.exists()][::-1]  # outermost first
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=TEMPORARY_SUFFIX))
    except OSError as error:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise UserError(f"--out {out} cannot be created: {error.strerror or error}") from None
    try:
        for path, content in zip(paths, contents):
            save_torch(staging / path.name, content)
        for path in paths:
            os.replace(staging / path.name, path)
    except BaseException:
        for path in paths:
            (staging / path.name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staging.rmdir()
        for folder in reversed(created):  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    staging.rmdir()


def export_run(folder: Path, out: Path | None = None, *, overwrite: bool = False, device: str = "cpu",
               data_root: str | None = None, trust_code: bool = False) -> list[Path]:
    """Write model.pt and policy.pt of the finished run in `folder` into `out` (default:
    folder/export); returns their paths. Existing files are replaced only with `overwrite`.
    A run whose config.json names code is exported only with `trust_code`."""
    out = Path(out) if out is not None else Path(folder) / "export"
    paths = [out / MODEL_FILE, out / POLICY_FILE]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite "
                        f"to replace, or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    refuse_linked_folders(Path(folder), out)  # the run's own export/ is never a link out of it
    trainer, checkpoint = restored_trainer(Path(folder), "export", device=device, data_root=data_root,
                                           trust_code=trust_code)
    config = trainer.config
    model_state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    context = {"batch_size": config.batch_size, "steps_per_epoch": trainer.strategy.steps_per_epoch,
               "epochs": config.epochs}
    contents = [{"format": EXPORT_FORMAT, "model": config.model, "model_options": config.model_options,
                 "spec": dataclasses.asdict(trainer.spec), "state_dict": model_state},
                {"format": EXPORT_FORMAT, "policy": config.policy, "policy_options": config.policy_options,
                 "context": context, "state_dict": checkpoint["policy"],
                 "feature_model": checkpoint.get("transfer_source")}]
    write_together(out, paths, contents)
    return paths
