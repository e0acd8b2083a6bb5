"""A run's folder: config.json, metrics.jsonl, results.json, the checkpoint and the figures,
owned through a manifest and held by one process at a time.

- **Ownership.** The run writes `.metaaugment-run.json`, a manifest of the files it created.
  `--overwrite` removes exactly those files (and never the folder's other contents), and
  refuses a folder without a manifest: metaaugment did not create it.
- **Containment.** A manifest lists relative names inside the folder only (`member_name`:
  one to three plain path components, no `..`, nothing absolute, no string for a list); a
  manifest listing anything else is damaged and nothing is removed. Removal never follows a
  symbolic link: a link is removed as a link, a member below a linked folder is left alone.
  Sub-folders a tool wrote into (tensorboard/) are emptied of the run's own files and removed
  only when nothing else is left in them.
- **One process per folder.** A run holds an OS lock (`fcntl.flock`) on `.metaaugment.lock`
  for its whole life; a second process on the same folder stops with one line naming the
  holder's PID. The OS drops the lock of a killed process, so a crash never blocks a resume.
  The lock file is opened without following a link (`O_NOFOLLOW`) and must be a regular file.
- **A failed start leaves nothing behind.** `check` validates without writing; the folder,
  its lock file and config.json are created only once everything else has been built.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

from metaaugment.infra.errors import UserError
from metaaugment.infra.files import (
    file_kind,
    open_for_append,
    read_capped,
    read_text_capped,
    remove_stale_temporary_files,
    write_json,
    write_text,
)
from metaaugment.infra.schema import SchemaError, check_value, clip, short

CONFIG, METRICS, RESULTS, CHECKPOINT = "config.json", "metrics.jsonl", "results.json", "checkpoint.pt"
MANIFEST, LOCK = ".metaaugment-run.json", ".metaaugment.lock"
MANIFEST_FORMAT = "metaaugment-run/1"
METRICS_CAP = 1 << 30  # a record every few steps: a long run's metrics.jsonl is some MiB

# Settings that may change between a run and its resumption without changing its results.
NON_IDENTITY_KEYS = frozenset({"device", "data_root", "checkpoint_every", "workers", "tensorboard", "wandb"})
_COMPONENT = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.=+-]*$")
TREE_SUFFIX = "/**"  # a member folder whose whole content the run's tools wrote for it (wandb's run folder)
# results.json, as runs write it: what compare, eval and the CLI read back
RESULTS_SCHEMA = {"metrics": dict[str, int | float | None], "wall_time_s": float}


def member_name(name: Any) -> str:
    """`name` checked to be a manifest entry: a relative name inside the run folder of one to
    three plain components (letters, digits, . _ = + -; never `.` or `..`), ending in `/`
    for a folder the run made (removed when empty) or `/**` for a tool's folder that is the
    run's whole (removed with its content). A ValueError otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"a manifest entry must be a string, not {short(name)}")
    body = name[:-len(TREE_SUFFIX)] if name.endswith(TREE_SUFFIX) else name.removesuffix("/")
    parts = body.split("/")
    if not 1 <= len(parts) <= 3 or any(part in (".", "..") or not _COMPONENT.match(part) for part in parts):
        raise ValueError(f"{short(name)} is not a name inside the run folder")
    return name


def folder_name(name: str) -> str:
    """`name` as one folder name: a plug-in reference module.path:Name becomes module.path-Name
    (a colon is not allowed in Windows paths and confuses scp and rsync)."""
    return name.replace(":", "-").replace("/", "-").replace("\\", "-")


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable 'key: old -> new' for every identity-defining setting that differs.
    Both sides are compared as config.json stores them (tuples become lists). A setting added
    to RunConfig after a folder was written is missing from its config.json: missing means
    the setting's default (the value that run had), so older runs still resume and are reused."""
    from metaaugment.run.config import RunConfig

    defaults = json.loads(json.dumps(RunConfig().to_dict()))
    old = {**defaults, **json.loads(json.dumps(old))}
    new = {**defaults, **json.loads(json.dumps(new))}
    keys = (set(old) | set(new)) - NON_IDENTITY_KEYS
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)]


def _read_json(path: Path, what: str) -> Any:
    text = read_text_capped(path, what)  # a regular file, never through a link, capped
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise UserError(f"{path} cannot be read ({clip(str(error), 200)}): the {what} is "
                        f"damaged; rerun with --overwrite to start this run again") from None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _reason(error: OSError) -> str:
    return error.strerror or " ".join(str(error).split())


def _open_lock(path: Path) -> Any:
    """The lock file, opened for reading and writing (created if missing) without following
    a link, and checked to be a regular file; a UserError otherwise."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise UserError(f"{path} is a symbolic link: a run never writes through one; remove it") from None
        if error.errno == errno.EISDIR:
            raise UserError(f"{path} is not a regular file: a run locks its folder with a file of that name; "
                            f"remove it") from None
        raise UserError(f"--out {path.parent} cannot be written: {_reason(error)}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file: a run locks its folder with a file of that name; remove it")
    if status.st_nlink > 1:  # writing the PID would change the file's other names too
        os.close(fd)
        raise UserError(f"{path} has {status.st_nlink - 1} other name(s) (a hard link): a run writes its lock only "
                        f"into a file of its own; remove it")
    return os.fdopen(fd, "r+")


def _write_lock(handle: Any, text: str) -> None:
    """Replace the open lock file's contents by `text`, on disk before this returns."""
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


class RunDirectory:
    """Paths and file operations of one run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_handle: Any = None

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    results_path = property(lambda self: self.path / RESULTS)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT)
    manifest_path = property(lambda self: self.path / MANIFEST)
    lock_path = property(lambda self: self.path / LOCK)

    @property
    def finished(self) -> bool:
        """True once results.json has been written."""
        return self.results_path.is_file()

    # -- validation (writes nothing) ----------------------------------------------------------
    def check_location(self) -> None:
        """A UserError when the folder cannot be created or written: a file in its place or
        above it, or a parent the user may not write into."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder")
        existing = self.path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"--out {self.path} cannot be created: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"--out {self.path} cannot be written: no write permission on {existing}")

    def refuse_odd_members(self) -> None:
        """A UserError when a file the run keeps (config, results, checkpoint, manifest,
        metrics) is there but not a regular file: a link, FIFO, device, socket or folder is
        never read, written or taken for a missing file."""
        for name, what in ((CONFIG, "configuration"), (RESULTS, "results"), (CHECKPOINT, "checkpoint"),
                           (MANIFEST, "manifest"), (METRICS, "metrics record")):
            path = self.path / name
            if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
                kind = "a symbolic link" if path.is_symlink() else file_kind(path)
                raise UserError(f"{path} is {kind}: a run keeps its {what} in a regular file of its own; move it away")

    def owned(self) -> bool:
        """Whether metaaugment created this folder (it holds our manifest)."""
        return self.manifest_path.is_file()

    def holds_anything(self) -> bool:
        """Whether the folder exists and holds more than a lock (a run, or something else)."""
        return self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())

    def check(self, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False) -> bool:
        """Validate opening this folder for `config`, writing nothing; True when it holds a
        run to continue or reuse. Raises UserError when the flags do not allow it."""
        self.check_location()
        if not self.holds_anything():
            return False
        self.refuse_odd_members()
        if overwrite:
            if not self.owned():
                raise UserError(f"refusing to overwrite {self.path}: metaaugment did not create it (no {MANIFEST}); "
                                f"choose another --out")
            return False
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not empty and holds no metaaugment run; choose another --out")
        if not resume:
            state = "a finished run" if self.finished else "an unfinished run"
            raise UserError(f"{self.path} already holds {state}; pass --resume to continue or reuse it, "
                            f"--overwrite to replace it, or choose another --out")
        differences = config_differences(self.read_config(), config)
        if differences:
            raise UserError(f"cannot resume {self.path}: its configuration differs ({'; '.join(differences)})")
        return True

    # -- the lock -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator["RunDirectory"]:
        """Hold the folder's OS lock for the block (creating the folder if needed). Another
        process holding it is a UserError naming its PID. If the block fails before the run
        wrote its manifest, what this call created (folder, lock file) is removed again. The
        lock file is never a link followed or anything but a regular file."""
        import fcntl

        created = self._make_folder()
        created_lock = not os.path.lexists(self.lock_path)
        try:
            handle = _open_lock(self.lock_path)
        except UserError:
            self._remove_folders(created)
            raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = clip(handle.read(64).strip(), 20) or "unknown"
            handle.close()
            raise UserError(f"{self.path} is in use by another metaaugment process (pid {holder}); wait for it to "
                            f"end or choose another --out") from None
        handle.seek(0)
        previous = handle.read(64)  # put back when the block ends
        try:
            _write_lock(handle, f"{os.getpid()}\n")
        except OSError as error:  # a full disk: no empty lock, no new folder left behind
            if not created_lock:
                with contextlib.suppress(OSError):
                    _write_lock(handle, previous)
            with contextlib.suppress(OSError):
                handle.close()
            if created_lock:
                self.lock_path.unlink(missing_ok=True)
            self._remove_folders(created)
            raise UserError(f"cannot write {self.lock_path}: {_reason(error)}") from None
        self._lock_handle = handle
        started = self.owned()
        try:
            yield self
        except BaseException:
            if not started and not self.owned():  # this call started nothing: leave nothing behind
                if created_lock:
                    self.lock_path.unlink(missing_ok=True)
                self._remove_folders(created)
            raise
        finally:
            if not created_lock:  # a lock file found here holds again what it held (a refused start changes nothing)
                with contextlib.suppress(OSError):
                    _write_lock(handle, previous)
            self._lock_handle = None
            with contextlib.suppress(OSError):
                handle.close()  # releases the lock

    def _make_folder(self) -> list[Path]:
        """Create the folder and its missing parents; returns those created, outermost first.
        A failure removes them again and is a UserError."""
        missing = []
        folder = self.path
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        created: list[Path] = []
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as error:
                self._remove_folders(created)
                raise UserError(f"--out {self.path} cannot be created: {' '.join(str(error).split())}") from None
            created.append(folder)
        return created

    @staticmethod
    def _remove_folders(created: list[Path]) -> None:
        for folder in reversed(created):  # innermost first, and only if still empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    # -- writing ------------------------------------------------------------------------------
    def _manifest(self) -> list[str]:
        """The manifest's entries, each checked to name something inside the folder; a
        UserError (nothing removed) for a manifest that is damaged or not ours."""
        if not self.owned():
            return []
        manifest = _read_json(self.manifest_path, "run manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{self.manifest_path} is not a metaaugment run manifest ({MANIFEST_FORMAT}); nothing "
                            f"was removed")
        files = manifest.get("files", [])
        try:
            if not isinstance(files, list):
                raise ValueError(f"its files must be a list of names, not {short(files)}")
            return [member_name(name) for name in files]
        except ValueError as error:
            raise UserError(f"{self.manifest_path} is damaged ({error}); nothing was removed, and only files inside "
                            f"the run folder ever are") from None

    def record(self, *names: str) -> None:
        """Add files (names inside the folder, `member_name`) to the manifest of files this run
        created."""
        files = self._manifest()
        files += [member_name(name) for name in names if name not in files]
        write_json(self.manifest_path, {"format": MANIFEST_FORMAT, "files": files})

    def prepare(self, config: dict[str, Any], *, overwrite: bool = False) -> None:
        """Start (or, with `overwrite`, restart) the run in the locked folder: remove what an
        earlier run created (only what its manifest lists, `remove_members`), remove temporary
        files of killed writes, then write the manifest and config.json. Call `check` first."""
        assert self._lock_handle is not None, "prepare runs under locked()"
        if overwrite and self.owned():
            self.remove_members([name for name in self._manifest() if name not in (LOCK, MANIFEST)])
            self.manifest_path.unlink()
        remove_stale_temporary_files(self.path)
        if not self.owned():
            self.record(LOCK, CONFIG, METRICS, CHECKPOINT, RESULTS)
            write_json(self.config_path, config)

    def remove_members(self, names: list[str]) -> None:
        """Remove the manifest entries `names`: files (a link as a link), then whole tool
        folders (`/**`), then the run's folders that are left empty, innermost first. Nothing
        below a linked or missing folder, and nothing outside the run folder, is touched."""
        def inside(name: str) -> Path | None:
            parts = name.removesuffix(TREE_SUFFIX).removesuffix("/").split("/")
            path = self.path
            for part in parts[:-1]:  # every folder on the way is a real folder, not a link
                path = path / part
                if path.is_symlink() or not path.is_dir():
                    return None
            return path / parts[-1]

        trees = [n for n in names if n.endswith(TREE_SUFFIX)]
        folders = [n for n in names if n.endswith("/") and n not in trees]
        for name in (n for n in names if n not in trees and n not in folders):
            path = inside(name)
            if path is not None and (path.is_symlink() or path.is_file()):
                path.unlink()
        for name in trees:
            path = inside(name)
            if path is not None and path.is_symlink():
                path.unlink()
            elif path is not None and path.is_dir():
                shutil.rmtree(path)  # rmtree removes links inside as links, never their targets
        for name in sorted(folders, key=lambda n: -n.count("/")):
            path = inside(name)
            if path is not None and not path.is_symlink() and path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def read_config(self, *, check: bool = True) -> dict[str, Any]:
        """The stored configuration, held to RunConfig's schema (`check`; a UserError naming
        the file for a damaged one)."""
        settings = _read_json(self.config_path, "run configuration")
        if check:
            from metaaugment.run.config import RunConfig

            RunConfig.from_dict(settings, f"run configuration {self.config_path}")
        return settings

    def read_results(self) -> dict[str, Any]:
        """The stored final results (the run must be finished), checked to hold what its readers
        use: a mapping of metrics to numbers, the wall time and a known benchmark kind."""
        results = _read_json(self.results_path, "results file")
        try:
            if not isinstance(results, dict):
                raise SchemaError(f"it holds a {type(results).__name__}, not a mapping")
            for key, kind in RESULTS_SCHEMA.items():
                check_value(results.get(key), kind, key)
            from metaaugment.spec import KINDS

            if results.get("kind", "classification") not in KINDS:
                raise SchemaError(f"kind must be one of {', '.join(KINDS)} (got {short(results.get('kind'))})")
        except SchemaError as error:
            raise UserError(f"{self.results_path}: the results file is damaged ({error}); rerun with --overwrite to "
                            f"start this run again") from None
        return results

    def write_results(self, results: dict[str, Any]) -> None:
        """Write results.json atomically; it marks the run as finished."""
        write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (never through a link)."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            fd = open_for_append(self.metrics_path, "metrics record")
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as error:
            raise UserError(f"cannot write {self.metrics_path}: {_reason(error)}") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (an unterminated last line from a crash, and any line
        that is not a record, are skipped): each a mapping with a string `kind`, an integer
        `step` and number values (anything else in a record is left out)."""
        if not self.metrics_path.is_file() or self.metrics_path.is_symlink():
            return []
        records = []
        text = read_capped(self.metrics_path, "metrics record", METRICS_CAP).decode("utf-8", errors="replace")
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("kind"), str) and type(record.get("step")) is int:
                records.append({key: value for key, value in record.items() if key == "kind" or (
                    isinstance(value, (int, float)) and not isinstance(value, bool))})
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only records up to `last_step` (0: none): on resume, later ones are produced again."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step and last_step > 0]
        write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
