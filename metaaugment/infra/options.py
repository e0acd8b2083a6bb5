"""The keyword options of a factory (a policy, learner, model or a benchmark's options class):
their types from the signature, their meanings from the docstring's `Options:` section, and
`key=value` command-line items parsed into them. The registries and the CLI read options
only through here."""
from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from metaaugment.infra.errors import UserError


def _signature_of(factory: Callable[..., Any]) -> inspect.Signature:
    """The signature of a class's __init__, or of a function."""
    return inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)


def accepts_var_kwargs(factory: Callable[..., Any]) -> bool:
    """Whether `factory` takes **kwargs (any option name)."""
    return any(p.kind is p.VAR_KEYWORD for p in _signature_of(factory).parameters.values())


def option_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only options of a factory and their types (what `--set` parses and a file's
    values are held to): the annotation, else the default's type, else any value."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: inferred from the defaults
        hints = {}

    def declared(p: inspect.Parameter) -> Any:
        if p.name in hints:
            return hints[p.name]
        if type(p.default) in (bool, int, float, str):
            return type(p.default)
        return Any

    return {p.name: declared(p) for p in _signature_of(factory).parameters.values() if p.kind is p.KEYWORD_ONLY}


@dataclass(frozen=True)
class OptionInfo:
    """One option of a factory as `metaaug list KIND NAME` shows it."""

    name: str
    type: str
    default: Any
    meaning: str


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(kind))
    if kind is type(None):
        return "None"
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "")


def option_meanings(factory: Callable[..., Any]) -> dict[str, str]:
    """The `Options:` sections of a factory's docstring (a class's and its bases', the class's
    own winning; or a function's), one `name: meaning` line per option, continued on
    deeper-indented lines."""
    meanings: dict[str, str] = {}
    sources = inspect.getmro(factory) if inspect.isclass(factory) else (factory,)
    for source in reversed(sources):
        meanings.update(_options_section(inspect.cleandoc(source.__doc__ or "")))
    return meanings


def _options_section(doc: str) -> dict[str, str]:
    meanings: dict[str, str] = {}
    lines = doc.splitlines()
    stripped = [line.strip() for line in lines]
    if "Options:" not in stripped:
        return meanings
    base = None  # the indent of the option lines; deeper lines continue the option above
    current = None
    for line in lines[stripped.index("Options:") + 1:]:
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent == 0:
            break
        match = re.match(r"^\s+(\w+): (.*)$", line)
        if match and (base is None or indent == base):
            base, current = indent, match.group(1)
            meanings[current] = match.group(2).strip()
        elif current is not None:
            meanings[current] += " " + line.strip()
    return meanings


def describe_options(factory: Callable[..., Any]) -> list[OptionInfo]:
    """Each keyword option of `factory` with its type, default (from the signature) and
    one-line meaning (from the docstring's `Options:` section; "" when it has none)."""
    meanings = option_meanings(factory)
    parameters = _signature_of(factory).parameters
    return [OptionInfo(name, _type_name(kind), parameters[name].default, meanings.get(name, ""))
            for name, kind in option_types(factory).items()]


def _coerce(text: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        kind = args[0] if args else str
        origin = typing.get_origin(kind)
    if origin in (tuple, list):
        inner = (typing.get_args(kind) or (str,))[0]
        return tuple(_coerce(part, inner, key) for part in text.split(",") if part)
    if kind is Any:
        return text
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind in (int, float):
            return kind(text)
    except ValueError:
        raise UserError(f"option {key}={text!r} is not a valid {kind.__name__}") from None
    return text


def parse_options(factory: Callable[..., Any], assignments: list[str]) -> dict[str, Any]:
    """Turn CLI `key=value` strings into typed keyword options for `factory`."""
    types = option_types(factory)
    options: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"option {item!r} must look like key=value")
        if key in options:
            raise UserError(f"option {key} is given twice; give each option once")
        options[key] = _coerce(value.strip(), types.get(key, str), key)
    return options
