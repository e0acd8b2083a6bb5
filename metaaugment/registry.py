"""Name -> factory registries that map CLI names to policies, learners, models and benchmarks.

The four registries live here; the modules that define the built-in entries register them
when imported, and a registry imports its built-in modules the first time it is asked for a
name, so `create_policy("mixup")` works without importing anything else first.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from metaaugment.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its factory and a one-line summary for `metaaug list`."""

    name: str
    factory: Callable[..., T]
    summary: str


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """A named collection of factories of one kind (`kind` is used in error messages)."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._builtins = builtins  # modules registering the built-in entries, imported on first use
        self._loaded = not builtins

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the modules register into this registry while importing
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, name: str, summary: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or function under `name`. A class gets `name` as its
        `name` attribute (what config.json and describe() record), so the name is written once."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if inspect.isclass(factory):
                factory.name = name  # type: ignore[attr-defined]
            self._entries[name] = Entry(name, factory, summary or _first_doc_line(factory))
            return factory

        return decorate

    @contextlib.contextmanager
    def scoped(self) -> Iterator["Registry[T]"]:
        """A block whose registrations are undone when it ends (tests, notebooks)."""
        self._load_builtins()
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load_builtins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> Entry[T]:
        """The entry for `name`, or a UserError naming the valid choices."""
        self._load_builtins()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def create(self, name: str, *args: Any, **options: Any) -> T:
        """Build `name` with keyword `options`. Unknown option names, and option values the
        factory rejects with a ValueError or TypeError, give a one-line UserError naming them."""
        factory = self.get(name).factory
        accepted = option_types(factory)
        unknown = sorted(set(options) - set(accepted))
        if unknown and not _accepts_var_kwargs(factory):
            valid = f"its options: {', '.join(accepted)}" if accepted else "it takes no options"
            raise UserError(f"{self.kind} '{name}' has no option {', '.join(unknown)}; {valid}")
        try:
            return factory(*args, **options)
        except (ValueError, TypeError) as error:
            message = " ".join(str(error).split())  # one line, even from a multi-line message
            if options and not any(re.search(rf"\b{re.escape(key)}\b", message) for key in options):
                given = ", ".join(f"{key}={value!r}" for key, value in options.items())
                message = f"rejects {given}: {message}"
            raise UserError(f"{self.kind} '{name}': {message}") from None


def _signature_of(factory: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)


def _accepts_var_kwargs(factory: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in _signature_of(factory).parameters.values())


def option_types(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only options of a factory and their annotated types (what `--set` accepts)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to strings
        hints = {}
    return {
        p.name: hints.get(p.name, str)
        for p in _signature_of(factory).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


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


POLICIES: Registry[Any] = Registry("policy", builtins=(
    "metaaugment.baselines", "metaaugment.sample_aware", "metaaugment.rl_mixup", "metaaugment.task_augmentation"))
LEARNERS: Registry[Any] = Registry("learner", builtins=("metaaugment.learners",))
MODELS: Registry[Any] = Registry("model", builtins=("metaaugment.models",))
BENCHMARKS: Registry[Any] = Registry("benchmark", builtins=("metaaugment.tasks",))


def create_policy(name: str, **options: Any) -> Any:
    """A new augmentation policy by registry name; unknown names or options raise UserError."""
    return POLICIES.create(name, **options)


def list_policies() -> list[Entry[Any]]:
    """Every registered policy with its one-line summary, sorted by name."""
    return list(POLICIES)


def create_learner(name: str, **options: Any) -> Any:
    """A new learner by registry name; unknown names or options raise UserError."""
    return LEARNERS.create(name, **options)


def list_learners() -> list[Entry[Any]]:
    """Every registered learner with its one-line summary."""
    return list(LEARNERS)


def create_model(name: str, spec: Any, **options: Any) -> Any:
    """A new task network (nn.Module) by registry name, sized for the TaskSpec `spec`."""
    return MODELS.create(name, spec, **options)


def list_models() -> list[Entry[Any]]:
    """Every registered model with its one-line summary."""
    return list(MODELS)


def create_benchmark(name: str) -> Any:
    """The benchmark registered as `name`; unknown names raise UserError with the choices."""
    return BENCHMARKS.create(name)


def list_benchmarks() -> list[Entry[Any]]:
    """Every registered benchmark with its one-line summary."""
    return list(BENCHMARKS)
