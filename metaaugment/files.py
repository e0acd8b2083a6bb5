"""Atomic file writes (JSON, text, bytes, torch objects, matplotlib figures): a reader, or a
crash, never sees a half-written file."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch


def _default_file_mode() -> int:
    # the permissions open() would give a new file (0o666 minus the umask); mkstemp's 0o600
    # would make results unreadable to a group sharing a results folder
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
