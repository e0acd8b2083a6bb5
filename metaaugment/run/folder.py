"""A run's folder: config.json, metrics.jsonl, results.json, the checkpoint and the figures,
owned through a manifest and held by one process at a time.

- **Ownership.** The run writes `.metaaugment-run.json`, a manifest of the files it created.
  `--overwrite` removes exactly those files (and never the folder's other contents), and
  refuses a folder without a manifest: metaaugment did not create it.
- **One process per folder.** A run holds an OS lock (`fcntl.flock`) on `.metaaugment.lock`
  for its whole life; a second process on the same folder stops with one line naming the
  holder's PID. The OS drops the lock of a killed process, so a crash never blocks a resume.
- **A failed start leaves nothing behind.** `check` validates without writing; the folder,
  its lock file and config.json are created only once everything else has been built.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from metaaugment.errors import UserError
from metaaugment.files import remove_stale_temporary_files, write_json, write_text

CONFIG, METRICS, RESULTS, CHECKPOINT = "config.json", "metrics.jsonl", "results.json", "checkpoint.pt"
MANIFEST, LOCK = ".metaaugment-run.json", ".metaaugment.lock"
MANIFEST_FORMAT = "metaaugment-run/1"

# Settings that may change between a run and its resumption without changing its results.
NON_IDENTITY_KEYS = frozenset({"device", "data_root", "checkpoint_every", "workers", "tensorboard", "wandb"})


def folder_name(name: str) -> str:
    """`name` as one folder name: a plug-in reference module.path:Name becomes module.path-Name
    (a colon is not allowed in Windows paths and confuses scp and rsync)."""
    return name.replace(":", "-").replace("/", "-").replace("\\", "-")


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable 'key: old -> new' for every identity-defining setting that differs.
    Both sides are compared as config.json stores them (tuples become lists)."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    keys = (set(old) | set(new)) - NON_IDENTITY_KEYS
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({' '.join(str(error).split())}): the {what} is damaged; "
                        f"rerun with --overwrite to start this run again") from None


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

    def owned(self) -> bool:
        """Whether metaaugment created this folder (it holds our manifest)."""
        return self.manifest_path.is_file()

    def check(self, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False) -> bool:
        """Validate opening this folder for `config`, writing nothing; True when it holds a
        run to continue or reuse. Raises UserError when the flags do not allow it."""
        self.check_location()
        if not (self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())):
            return False
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
        wrote its manifest, what this call created (folder, lock file) is removed again."""
        import fcntl

        created = self._make_folder()
        created_lock = not self.lock_path.exists()
        try:
            handle = open(self.lock_path, "a+")
        except OSError as error:
            self._remove_folders(created)
            raise UserError(f"--out {self.path} cannot be written: {' '.join(str(error).split())}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"{self.path} is in use by another metaaugment process (pid {holder}); wait for it to "
                            f"end or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
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
            self._lock_handle = None
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
        if not self.owned():
            return []
        manifest = _read_json(self.manifest_path, "run manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{self.manifest_path} is not a metaaugment run manifest ({MANIFEST_FORMAT})")
        return [str(name) for name in manifest.get("files", [])]

    def record(self, *names: str) -> None:
        """Add files (names inside the folder) to the manifest of files this run created."""
        files = self._manifest()
        files += [name for name in names if name not in files]
        write_json(self.manifest_path, {"format": MANIFEST_FORMAT, "files": files})

    def prepare(self, config: dict[str, Any], *, overwrite: bool = False) -> None:
        """Start (or, with `overwrite`, restart) the run in the locked folder: remove what an
        earlier run created (only the files in its manifest), remove temporary files of killed
        writes, then write the manifest and config.json. Call `check` first."""
        assert self._lock_handle is not None, "prepare runs under locked()"
        if overwrite and self.owned():
            for name in self._manifest():
                if name.endswith("/"):  # a folder the run made (tensorboard/, wandb/), with what it wrote
                    shutil.rmtree(self.path / name, ignore_errors=True)
                elif name not in (LOCK, MANIFEST):
                    (self.path / name).unlink(missing_ok=True)
            self.manifest_path.unlink()
        remove_stale_temporary_files(self.path)
        if not self.owned():
            self.record(LOCK, CONFIG, METRICS, CHECKPOINT, RESULTS)
            write_json(self.config_path, config)

    def resume_cleanup(self) -> None:
        """Before continuing a run: remove temporary files its killed writes left."""
        remove_stale_temporary_files(self.path)

    def read_config(self) -> dict[str, Any]:
        """The stored configuration."""
        return _read_json(self.config_path, "run configuration")

    def read_results(self) -> dict[str, Any]:
        """The stored final results (the run must be finished)."""
        return _read_json(self.results_path, "results file")

    def write_results(self, results: dict[str, Any]) -> None:
        """Write results.json atomically; it marks the run as finished."""
        write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl."""
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of metrics.jsonl (an unterminated last line from a crash is skipped)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only records up to `last_step` (0: none): on resume, later ones are produced again."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step and last_step > 0]
        write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
