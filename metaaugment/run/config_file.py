"""Run configurations read from JSON or YAML files, and the reading of such files.

A run file holds RunConfig's fields (config.json of a finished run is one, so a run can be
replayed from its own folder). Sweep files (metaaugment.comparison.sweep_file) are read by
the same `read_mapping`. Both are held to one schema, RunConfig's field types (`RunConfig.check_settings`), the same
types the CLI parses its options into: a wrong type, an unknown or duplicate key, a file
too large or an alias bomb is one line naming the file and the key. Code references
(`module:Name`) in a file are refused unless the user trusts them (`metaaugment.infra.trust`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from metaaugment.infra.errors import UserError
from metaaugment.infra.files import read_text_capped
from metaaugment.infra.schema import SchemaError, clip, count_values, short
from metaaugment.run.config import RunConfig

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
MAX_FILE_BYTES = 1 << 20  # a settings file is a page of text; anything larger is not one
MAX_VALUES = 100_000  # values once YAML aliases are expanded


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a JSON (.json) or YAML (.yaml, .yml; anything else is tried
    as JSON, then YAML) file: plain data only (YAML's safe loader), no duplicate keys, at most
    MAX_FILE_BYTES and MAX_VALUES values with aliases expanded. A UserError naming the file
    when it cannot be read or is none of these."""
    path = Path(path)
    text = read_text_capped(path, what, MAX_FILE_BYTES)  # a regular file, never through a link, capped
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = _load_json(text)
        else:
            try:
                data = _load_json(text)
            except json.JSONDecodeError:
                data = _load_yaml(text)
    except SchemaError as error:
        raise UserError(f"{what} {path} {error}") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a settings file") from None
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(f"{what} {path} is not valid {'JSON' if suffix == '.json' else 'JSON or YAML'}: "
                        f"{clip(str(error), 200)}") from None
    try:
        count_values(data, MAX_VALUES)
    except SchemaError as error:
        raise UserError(f"{what} {path} {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return data


def _repeated(keys: list[Any]) -> Any:
    """The first key that occurs twice in `keys`, or None."""
    seen: set[Any] = set()
    for key in keys:
        try:
            if key in seen:
                return key
            seen.add(key)
        except TypeError:  # an unhashable key (a YAML list): its constructor reports it
            continue
    return None


def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    repeated = _repeated([key for key, _ in pairs])
    if repeated is not None:
        raise SchemaError(f"gives the key {short(repeated)} twice; give each setting once")
    return dict(pairs)


def _load_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _load_yaml(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):  # safe: plain data only, no Python objects
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            repeated = _repeated([self.construct_object(key, deep=deep) for key, _ in node.value])
            if repeated is not None:
                raise SchemaError(f"gives the key {short(repeated)} twice (line {node.start_mark.line + 1}); "
                                  f"give each setting once")
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """A UserError naming the keys of `data` that are not in `allowed` (and listing those)."""
    unknown = sorted((key for key in data if key not in allowed), key=str)
    if unknown:
        names = ", ".join(short(key) if not isinstance(key, str) else key for key in unknown)
        raise UserError(f"{where} has unknown setting{'s' if len(unknown) > 1 else ''} {names[:120]}; "
                        f"valid: {', '.join(allowed)}")


def run_settings(path: Path) -> dict[str, Any]:
    """The RunConfig fields a run file sets: checked names and types (RunConfig's schema),
    option mappings copied. Code references in it are the caller's to refuse or trust."""
    data = read_mapping(path, "config file")
    where = f"config file {path}"
    check_keys(data, RUN_FIELDS, where)
    return RunConfig.check_settings(data, where)
