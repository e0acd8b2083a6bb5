"""Files: atomic writes (JSON, text, bytes, torch objects, matplotlib figures), so a reader,
or a crash, never sees a half-written file; and loads that cannot run code.

Writes go to a temporary file beside the target (`.<name>.<random>.metaaug-tmp`), synced,
then renamed over it: a link in the target's place is replaced, never written through. A
write killed midway leaves only such a temporary file, which `remove_stale_temporary_files`
recognizes by its name and removes at the next start. A write the system refuses (disk
full, read-only or unwritable folder) is one UserError naming the file.

Reads of the files a run or comparison keeps (configs, sweeps, bookkeeping, manifests,
results, logs, checkpoints) go through `open_regular`: the file is opened without following
a link and without blocking (a FIFO cannot hang the program), must be a regular file (a
FIFO, device or socket is one line), and `read_capped` refuses one larger than its cap
before reading it (a sparse or endless file cannot fill memory).

Loads: torch files with `weights_only=True` (tensors, plain containers, strings and numbers);
dataset pickles (CIFAR, mini-ImageNet) through an unpickler that builds numpy arrays and
builtin containers and refuses everything else, so a crafted file cannot execute code.
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import stat
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

from metaaugment.infra.errors import UserError
from metaaugment.infra.interrupt import AtomicWrite

TEMPORARY_SUFFIX = ".metaaug-tmp"
SETTINGS_CAP = 1 << 20  # a settings or bookkeeping file is a page of text; anything larger is not one
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def file_kind(path: Path) -> str:
    """What `path` is, in words, when it is not a regular file ("a FIFO", "a folder", ...)."""
    return _kind_of(os.lstat(path).st_mode)


def open_regular(path: Path, what: str) -> int:
    """A read-only descriptor of `path`, opened without following a link and without
    blocking, and checked to be a regular file; one UserError naming the file and `what` it
    should be otherwise (missing, a link, a FIFO, a device, a socket, a folder)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise UserError(f"{path} is a symbolic link: the {what} is read only from a regular file, never "
                            f"through a link") from None
        raise UserError(f"{path} cannot be read as the {what} ({error.strerror or error})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UserError(f"{path} is {_kind_of(mode)}: the {what} must be a regular file")
    return fd


def read_capped(path: Path, what: str, cap: int = SETTINGS_CAP) -> bytes:
    """The bytes of the regular file `path` (`open_regular`), refused in one line naming the
    cap when it is larger than `cap` bytes (checked before reading, and while reading)."""
    fd = open_regular(path, what)
    try:
        if os.fstat(fd).st_size > cap:
            raise UserError(f"{path} is larger than {_size(cap)}: not a {what}")
        chunks, total = [], 0
        while total <= cap:
            chunk = os.read(fd, min(1 << 16, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:  # grew while read
            raise UserError(f"{path} is larger than {_size(cap)}: not a {what}")
        return b"".join(chunks)
    except OSError as error:
        raise UserError(f"{path} cannot be read as the {what} ({error.strerror or error})") from None
    finally:
        os.close(fd)


def read_text_capped(path: Path, what: str, cap: int = SETTINGS_CAP) -> str:
    """`read_capped` decoded as UTF-8; undecodable bytes are one UserError line."""
    try:
        return read_capped(path, what, cap).decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} cannot be read as the {what} (not UTF-8 text: {error.reason} at byte "
                        f"{error.start})") from None


def refuse_linked_folders(root: Path, path: Path) -> None:
    """A UserError when a folder between `root` (excluded: the folder the user named) and
    `path` (included), or `path` itself, is a symbolic link: what is written inside a run or
    comparison folder stays inside it."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise UserError(f"{current} is a symbolic link: metaaugment writes inside {root} only into folders of "
                            f"its own; remove the link")


def open_for_append(path: Path, what: str) -> int:
    """A descriptor appending to `path` (created if missing), never through a link, and only
    to a regular file with no other name (a hard link); one UserError line otherwise."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise UserError(f"{path} is a symbolic link: the {what} is never written through one; remove it") from None
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
        os.close(fd)
        problem = "a file with another name (a hard link)" if stat.S_ISREG(status.st_mode) else _kind_of(status.st_mode)
        raise UserError(f"{path} is {problem}: the {what} is written only into a regular file of its own; remove it")
    return fd


def _size(count: int) -> str:
    return f"{count // (1 << 20)} MiB" if count >= 1 << 20 else f"{count // 1024} KiB"


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
        self.handle, self.error, self.interrupted = handle, None, False

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise
        except KeyboardInterrupt:  # torch.save would report it as a RuntimeError of its own
            self.interrupted = True
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
        if getattr(writer, "interrupted", False) and not isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C inside torch.save: the interrupt, not torch's wrapper
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
    import torch  # here: the CLI reads settings files before torch is imported

    _write_atomically(path, lambda h: torch.save(obj, h))


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def show_image(ax: Any, image: Any) -> None:
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


def load_json(path: Path, what: str, cap: int = SETTINGS_CAP) -> Any:
    """The JSON of a file this program wrote (a run's records, a job file), or one UserError
    line naming it and `what` it is when it cannot be read (`read_text_capped`) or parsed."""
    text = read_text_capped(path, what, cap)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise UserError(f"{path} cannot be read as the {what} ({' '.join(str(error).split())[:200]})") from None


def load_torch(path: Path) -> Any:
    """torch.load of a file written by `save_torch`, on the CPU, with weights_only=True: only
    tensors, plain containers, strings and numbers are built, so a crafted file runs no code."""
    import torch

    fd = open_regular(Path(path), "torch file")  # a FIFO or link is refused before torch reads it
    with warnings.catch_warnings(), os.fdopen(fd, "rb") as handle:
        warnings.simplefilter("ignore")  # a crafted file's protocol warning: its refusal is reported as one line
        return torch.load(handle, map_location="cpu", weights_only=True)


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
        if name == "encode":
            return _latin1_encode
        if name in ("bytes", "bytearray"):
            return _bytes_of_data(bytearray if name == "bytearray" else bytes)
        return super().find_class(module, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol 2 calls it for bytes (latin-1 only: another codec, or a
    codec name that does not exist, is refused rather than looked up)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {short_text(encoding)}: a dataset pickle encodes "
                                     "bytes as latin-1")
    return text.encode("latin1")


def _bytes_of_data(kind: type) -> Callable[..., Any]:
    """bytes / bytearray of existing data only: `bytearray(10**13)` would allocate 10 TB."""
    def build(*args: Any) -> Any:
        if any(isinstance(arg, int) for arg in args[:1]):
            raise pickle.UnpicklingError(f"refusing {kind.__name__}(<count>): a dataset pickle stores data, not sizes")
        return kind(*args)
    return build


def short_text(value: Any) -> str:
    return repr(value)[:40]


def load_data_pickle(handle: BinaryIO, encoding: str = "ASCII") -> Any:
    """Unpickle a dataset file (CIFAR's and mini-ImageNet's pickles) without running code:
    only numpy arrays and builtin containers, strings and numbers are built, never from a
    count (no allocation a file can inflate); whatever else goes wrong building them is an
    UnpicklingError naming it."""
    try:
        return _DataUnpickler(handle, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError):
        raise
    except (MemoryError, LookupError, OverflowError, AttributeError, ValueError, TypeError, IndexError,
            KeyError) as error:
        raise pickle.UnpicklingError(f"{type(error).__name__}: {' '.join(str(error).split())[:160]}") from None
