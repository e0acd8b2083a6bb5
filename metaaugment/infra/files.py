"""Files: atomic writes (JSON, text, bytes, torch objects, matplotlib figures), so a reader,
or a crash, never sees a half-written file; and loads that cannot run code.

Writes go to a temporary file beside the target (`.<name>.<random>.metaaug-tmp`), synced,
then renamed over it: a link in the target's place is replaced, never written through. A
write killed midway leaves only such a temporary file, which `remove_stale_temporary_files`
recognizes by its name and removes at the next start. A write the system refuses (disk
full, read-only or unwritable folder) is one UserError naming the file.

Loads: torch files with `weights_only=True` (tensors, plain containers, strings and numbers);
dataset pickles (CIFAR, mini-ImageNet) through an unpickler that builds numpy arrays and
builtin containers and refuses everything else, so a crafted file cannot execute code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

import torch

from metaaugment.infra.errors import UserError
from metaaugment.infra.interrupt import AtomicWrite

TEMPORARY_SUFFIX = ".metaaug-tmp"


def _default_file_mode() -> int:
    # the permissions open() would give a new file (0o666 minus the umask); mkstemp's 0o600
    # would make results unreadable to a group sharing a results folder
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class _RecordingWriter:
    """A binary file's `write`, remembering the OSError it raised: torch.save reports a failed
    write (disk full) as a RuntimeError of its own, which this lets us name."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as error:
            self.error = error
            raise


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with AtomicWrite():  # the Ctrl-C watchdog lets it finish
        _write_through_temporary(Path(path), write)


def _write_through_temporary(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    tmp, writer = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            writer = _RecordingWriter(handle)
            write(writer)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = error if isinstance(error, OSError) else getattr(writer, "error", None)
        if cause is not None:  # the previous file, if any, is intact
            raise UserError(f"cannot write {path}: {cause.strerror or ' '.join(str(cause).split())}") from None
        raise


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    _write_atomically(path, lambda h: h.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically."""
    _write_atomically(path, lambda h: h.write(data))


def save_torch(path: Path, obj: Any) -> None:
    """torch.save `obj` atomically."""
    _write_atomically(path, lambda h: torch.save(obj, h))


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def show_image(ax: Any, image: torch.Tensor) -> None:
    """Show one (C, H, W) image in [0, 1] (gray when C = 1) on a matplotlib axis."""
    array = image.permute(1, 2, 0).clamp(0, 1).numpy()
    gray = array.shape[-1] == 1
    ax.imshow(array.squeeze(-1) if gray else array, cmap="gray" if gray else None,
              vmin=0, vmax=1, interpolation="nearest")


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG (120 dpi), atomically, and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes(Path(path), buffer.getvalue())


def remove_stale_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files of atomic writes that were killed midway (their names end
    in TEMPORARY_SUFFIX, which nothing else uses) directly in `folder`; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir()
             if p.is_file() and p.name.startswith(".") and p.name.endswith(TEMPORARY_SUFFIX)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_json(path: Path, what: str) -> Any:
    """The JSON of a file this program wrote (a run's records, a job file), or one UserError
    line naming it and `what` it is when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise UserError(f"{path} cannot be read as the {what} ({' '.join(str(error).split())[:200]})") from None


def load_torch(path: Path) -> Any:
    """torch.load of a file written by `save_torch`, on the CPU, with weights_only=True: only
    tensors, plain containers, strings and numbers are built, so a crafted file runs no code."""
    with warnings.catch_warnings():  # a crafted file's protocol warning: its refusal is reported as one line
        warnings.simplefilter("ignore")
        return torch.load(Path(path), map_location="cpu", weights_only=True)


class _DataUnpickler(pickle.Unpickler):
    """An unpickler for dataset pickles: numpy arrays, numpy scalars and builtin containers."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol 2 stores bytes
        ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("builtins", "bytes"), ("__builtin__", "bytes"),  # how protocol 2 stores empty bytes (an empty array)
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a dataset pickle holds only arrays, "
                                         "lists, dicts, strings and numbers")
        return super().find_class(module, name)


def load_data_pickle(handle: BinaryIO, encoding: str = "ASCII") -> Any:
    """Unpickle a dataset file (CIFAR's and mini-ImageNet's pickles) without running code:
    only numpy arrays and builtin containers, strings and numbers are built."""
    return _DataUnpickler(handle, encoding=encoding).load()
