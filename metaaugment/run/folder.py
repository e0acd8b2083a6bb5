"""A run's folder: config.json, metrics.jsonl, results.json and the checkpoint.

A folder is never overwritten silently: reusing an existing one needs `resume` (continue
or reuse it, with the same configuration) or `overwrite` (replace it, and only if it is a
run folder). `check` validates without writing, so a run that fails to start (missing
data, bad option) leaves no folder behind; `prepare` then writes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from metaaugment.errors import UserError
from metaaugment.files import write_json, write_text

CONFIG, METRICS, RESULTS, CHECKPOINT = "config.json", "metrics.jsonl", "results.json", "checkpoint.pt"

# Settings that may change between a run and its resumption without changing its results.
NON_IDENTITY_KEYS = frozenset({"device", "data_root", "checkpoint_every"})


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable 'key: old -> new' for every identity-defining setting that differs.
    Both sides are compared as config.json stores them (tuples become lists)."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    keys = (set(old) | set(new)) - NON_IDENTITY_KEYS
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(keys) if old.get(k) != new.get(k)]


class RunDirectory:
    """Paths and file operations of one run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    results_path = property(lambda self: self.path / RESULTS)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT)

    @property
    def finished(self) -> bool:
        """True once results.json has been written."""
        return self.results_path.is_file()

    def check(self, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False) -> bool:
        """Validate opening this folder for `config`, writing nothing; True when it holds a
        run to continue or reuse. Raises UserError when the flags do not allow it."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder")
        if not (self.path.is_dir() and any(self.path.iterdir())):
            return False
        if overwrite:
            if not self.config_path.is_file():
                raise UserError(f"refusing to overwrite {self.path}: it is not a metaaugment run folder (no {CONFIG})")
            return False
        if not resume:
            state = "a finished run" if self.finished else "an unfinished run"
            raise UserError(f"{self.path} already holds {state}; pass --resume to continue or reuse it, "
                            f"--overwrite to replace it, or choose another --out")
        if not self.config_path.is_file():
            raise UserError(f"cannot resume {self.path}: it has no {CONFIG}")
        differences = config_differences(self.read_config(), config)
        if differences:
            raise UserError(f"cannot resume {self.path}: its configuration differs ({'; '.join(differences)})")
        return True

    def prepare(self, config: dict[str, Any], *, overwrite: bool = False) -> None:
        """Create (or, with `overwrite`, replace) the folder and write config.json. Call
        `check` first: this method trusts it."""
        if overwrite and self.config_path.is_file():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        """The stored configuration."""
        return json.loads(self.config_path.read_text())

    def read_results(self) -> dict[str, Any]:
        """The stored final results (the run must be finished)."""
        return json.loads(self.results_path.read_text())

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
        """Keep only records up to `last_step`: on resume, later ones are produced again."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
