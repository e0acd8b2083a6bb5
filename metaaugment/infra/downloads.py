"""Network access only when the command line asks for it.

A model option that downloads weights (timm's `pretrained`) is honoured when the user typed
it (`--model-set pretrained=true`, or Python), never because a file said so: a config or
sweep file that sets it is refused in one line, and a model rebuilt to receive weights from
a file (a resumed checkpoint, eval, export, --policy-from, an exported model.pt) is built
without downloading. Datasets are downloaded only by `--download` (or `metaaug download`),
a command-line flag that no file can set, through `fetch_dataset`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from metaaugment.infra.errors import UserError

DOWNLOAD_OPTIONS = ("pretrained",)  # model options that fetch weights from the network


def offline_options(model_options: dict[str, Any]) -> dict[str, Any]:
    """`model_options` with every download option off: the weights come from a file."""
    return {key: (False if key in DOWNLOAD_OPTIONS else value) for key, value in model_options.items()}


def refuse_downloads_from_file(model_options: Any, source: str, typed: Iterable[str] = ()) -> None:
    """A UserError when `model_options` (read from `source`, a file) turn on a download option
    the command line did not give (`typed`: the option names given there)."""
    if not isinstance(model_options, dict):
        return
    given = set(typed)
    for key in DOWNLOAD_OPTIONS:
        if model_options.get(key) and key not in given:
            raise UserError(f"{source} sets model option {key}={model_options[key]!r}, which downloads weights: a file "
                            f"never makes metaaugment reach the network; give --model-set {key}=true on the command "
                            f"line")


def fetch_dataset(data_root: Path, produced: Sequence[str], fetch: Callable[[Path], None], what: str) -> list[str]:
    """Run `fetch(staging)` (which downloads, checks and unpacks into the empty folder
    `staging`), then move the entries `produced` from it into `data_root`. Returns the entries
    fetched; those already in `data_root` are kept as they are and not fetched again.

    `staging` is a hidden folder of our own inside `data_root`, removed whatever happens: a
    download that fails, is damaged or is interrupted leaves no archive and no half-unpacked
    folder, and `data_root` holds either all of an entry or none of it. A failure is one
    UserError line naming `what` and the reason (a folder we created for `data_root` is
    removed again if it stayed empty)."""
    data_root = Path(data_root)
    missing = [name for name in produced if not os.path.lexists(data_root / name)]
    if not missing:
        return []
    created = [folder for folder in (data_root, *data_root.parents) if not folder.exists()]
    try:
        data_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".metaaug-download-", dir=data_root))
    except OSError as error:
        raise UserError(f"--download {what}: cannot write {data_root}: {' '.join(str(error).split())}") from None
    try:
        fetch(staging)
        absent = [name for name in missing if not (staging / name).exists()]
        if absent:
            raise RuntimeError(f"the archive did not hold {', '.join(absent)}")
        for name in missing:
            (data_root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, data_root / name)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # urllib, torchvision's checksum, tarfile, zipfile, a full disk: one line
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise UserError(f"--download {what} failed ({type(error).__name__}: {reason}); nothing was kept in "
                        f"{data_root}, run the command again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own folder: the archive and anything half-unpacked
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
    return missing
