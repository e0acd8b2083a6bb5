"""Name -> factory registries that map CLI names to policies, learners, models and benchmarks.

The four registries live here; the modules that define the built-in entries register them
when imported, and a registry imports its built-in modules the first time it is asked for a
name, so `create_policy("mixup")` works without importing anything else first.

Plug-ins, without touching this package (docs/workflow.md):
- a reference `module.path:Name`, importable from the environment or the working folder,
  is resolved on first use and registered under that reference, which is what config.json
  records, so `--resume` and `compare` find it again;
- installed distributions declare entry points in the groups `metaaugment.policies`,
  `metaaugment.learners`, `metaaugment.models` and `metaaugment.benchmarks`; each is loaded
  the first time its name is asked for.
A plug-in that fails to import is one UserError line naming it.

Every factory, built-in or plug-in, is checked to be what its registry's role needs (a
policy class, a learner class, a model factory, a benchmark factory) before it is called,
its keyword options are held to the types its signature declares (`schema.check_value`),
and what it builds is checked to be of the role's type. A `module:Name` reference read
from a file never reaches a registry unless the user trusted it (`metaaugment.infra.trust`).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, NamedTuple, TypeVar

from metaaugment.infra.errors import UserError
from metaaugment.infra.options import (  # noqa: F401 (re-exported: the registry's options, as before)
    OptionInfo,
    accepts_var_kwargs,
    describe_options,
    option_meanings,
    option_types,
    parse_options,
)
from metaaugment.infra.schema import SchemaError, check_value, clip, short

T = TypeVar("T")


@dataclass(frozen=True)
class Role:
    """What a registry's factories must be and build. `base` ("module:Class") is the class a
    factory may subclass and whose instance it must build; `functions`, when given, says which
    plain Python functions may be factories too (a model's factory(spec, ...)); `what` is how
    an error names an acceptable factory. The base class is imported when first needed, by
    name: the registries sit below the modules that define the bases (no import cycle)."""

    base: str
    what: str
    functions: Callable[[Callable[..., Any]], bool] | None = None

    def base_class(self) -> type:
        """The class `base` names."""
        module, _, name = self.base.partition(":")
        return getattr(importlib.import_module(module), name)

    def accepts(self, factory: Any) -> bool:
        """Whether `factory` may be called to build an entry of this role."""
        if inspect.isclass(factory):
            return issubclass(factory, self.base_class())
        return self.functions is not None and inspect.isfunction(factory) and self.functions(factory)

    def produces(self, obj: Any) -> bool:
        """Whether `obj` is what a factory of this role must build."""
        return isinstance(obj, self.base_class())

    @property
    def product(self) -> str:
        """The built type's name, for error messages."""
        return self.base.replace(":", ".")


def _first_parameter_is_spec(function: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(parameters) and parameters[0].name == "spec" and parameters[0].kind in (
        parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD)


def _takes_no_required_arguments(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind is p.VAR_KEYWORD for p in parameters)


POLICY_ROLE = Role("metaaugment.policy:AugmentationPolicy",
                   "an AugmentationPolicy subclass (BatchPolicy or TaskPolicy)")
LEARNER_ROLE = Role("metaaugment.learners:Learner", "a Learner subclass")
MODEL_ROLE = Role("torch.nn:Module", "an nn.Module subclass or a function factory(spec, **options) whose first "
                  "parameter is spec", functions=_first_parameter_is_spec)
BENCHMARK_ROLE = Role("metaaugment.tasks:Benchmark",
                      "a function of no arguments returning a metaaugment.tasks.Benchmark",
                      functions=_takes_no_required_arguments)


def _what(obj: Any) -> str:
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if inspect.isroutine(obj):  # a function, builtin or method
        return f"the {type(obj).__name__} {getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"
    return f"a {type(obj).__name__}"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its factory, a one-line summary for `metaaug list`, and where it
    comes from ("built-in", "module:Name" file or module, or "entry point of DIST")."""

    name: str
    factory: Callable[..., T]
    summary: str
    origin: str = "built-in"


class Listed(NamedTuple):
    """One line of `metaaug list`: an entry's name, summary and origin, without its factory."""

    name: str
    summary: str
    origin: str


def summary_of(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line ("" for none): what
    `metaaug list` shows, whole, however the docstring's lines were broken."""
    paragraph = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(?:\s+(?=[A-Z`(\"'])|$)", paragraph)
    return match.group(1) if match else paragraph


def _registrations(path: Path, symbol: str) -> Iterator[Listed]:
    """The `@SYMBOL.register("name"[, summary])` decorations in the source file `path`, read
    with `ast` (nothing imported): how `metaaug list` names the built-ins without loading torch."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "register" and isinstance(decorator.func.value, ast.Name)
                    and decorator.func.value.id == symbol):
                continue
            given = [*decorator.args, *(k.value for k in decorator.keywords if k.arg in ("name", "summary"))]
            if not given or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in given):
                raise ValueError(f"{path}:{decorator.lineno}: {symbol}.register takes literal strings "
                                 "(metaaug list reads them without importing)")
            summary = given[1].value if len(given) > 1 else summary_of(ast.get_docstring(node))
            yield Listed(given[0].value, summary, "built-in")


def _source_files(module: str) -> list[Path]:
    """The .py files of `module` (all of a package's, recursively), located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(module)
    if spec.submodule_search_locations:
        return sorted(p for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.py"))
    return [Path(spec.origin)] if spec.origin else []


class Registry(Generic[T]):
    """A named collection of factories of one kind (`kind` is used in error messages);
    `group` is the entry-point group installed plug-ins declare their entries in."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = (), group: str | None = None,
                 role: Role | None = None, symbol: str = ""):
        self.kind = kind
        self.symbol = symbol  # the module-level name the built-in modules register through
        self.group = group
        self.role = role
        self._entries: dict[str, Entry[T]] = {}
        self._builtins = builtins  # modules registering the built-in entries, imported on first use
        self._loaded = not builtins
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None
        # name prefix -> resolver(rest of the name) -> factory, e.g. MODELS' "timm/"
        self._prefixes: dict[str, Callable[[str], Callable[..., T]]] = {}
        self._prefix_origins: dict[str, str] = {}

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the modules register into this registry while importing
            for module in self._builtins:
                importlib.import_module(module)

    def register(self, name: str, summary: str | None = None,
                 origin: str = "built-in") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or function under `name`. A class gets `name` as its
        `name` attribute (what config.json and describe() record), so the name is written once."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if inspect.isclass(factory):
                factory.name = name  # type: ignore[attr-defined]
            self._entries[name] = Entry(name, factory, summary or summary_of(inspect.getdoc(factory)), origin)
            return factory

        return decorate

    def register_prefix(self, prefix: str, resolver: Callable[[str], Callable[..., T]], origin: str) -> None:
        """Names `prefix` + REST resolve on first use to the factory `resolver(REST)`
        (which raises UserError for a REST it does not know), registered as `origin`."""
        self._prefixes[prefix] = resolver
        self._prefix_origins[prefix] = origin

    # -- plug-ins -------------------------------------------------------------------------
    def installed_plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The entry points installed distributions declare in this registry's group, by name
        (not loaded; a name that is also built in stays the built-in one)."""
        if self._entry_points is None:
            found = importlib.metadata.entry_points(group=self.group) if self.group else ()
            self._entry_points = {point.name: point for point in found}
        return self._entry_points

    def _load_plugin(self, name: str) -> Entry[T] | None:
        """Register the plug-in `name` (an installed entry point, or a `module:Name`
        reference) on first use; None when `name` is neither."""
        self._load_builtins()  # the built-in modules register the prefixes
        prefix = next((p for p in self._prefixes if name.startswith(p) and len(name) > len(p)), None)
        point = self.installed_plugins().get(name)
        if prefix is not None:
            factory = self._prefixes[prefix](name[len(prefix):])
            origin = self._prefix_origins[prefix]
        elif point is not None:
            distribution = point.dist.name if point.dist is not None else point.value
            origin = f"entry point of {distribution} ({point.value})"
            factory = _import_plugin(self.kind, name, point.load)
        elif ":" in name:
            module, _, attribute = name.partition(":")
            if not module or not attribute:
                raise UserError(f"{self.kind} '{name}' must look like module.path:Name")
            factory = _import_plugin(self.kind, name, lambda: _attribute(module, attribute))
            origin = _module_origin(module)
        else:
            return None
        self.check_factory(name, factory)
        self.register(name, origin=origin)(factory)
        return self._entries[name]

    def check_factory(self, name: str, factory: Any) -> None:
        """A UserError unless `factory` is what this registry's role needs; checked before it
        is ever called."""
        if self.role is not None and not self.role.accepts(factory):
            raise UserError(f"{self.kind} '{name}' is {_what(factory)}, not {self.role.what}")

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
        """Every entry, built-in and registered, and the installed plug-ins (loaded here; one
        that fails to import is listed with the reason as its summary), sorted by name."""
        self._load_builtins()
        broken = []
        for name, point in self.installed_plugins().items():
            if name not in self._entries:
                try:
                    self._load_plugin(name)
                except UserError as error:
                    origin = f"entry point of {point.dist.name if point.dist else point.value}"
                    broken.append(Entry(name, _broken_plugin, f"(cannot be used: {error})", origin))
        return iter(sorted([*self._entries.values(), *broken], key=lambda e: e.name))

    def listing(self) -> list[Listed]:
        """Every entry's name, summary and origin, sorted by name, as `iter` gives them. While
        the built-in modules are not imported (and no plug-in is installed), their entries are
        read from the sources' `@SYMBOL.register` lines, so listing costs no torch import."""
        if self._loaded or not self.symbol or self.installed_plugins():
            return [Listed(e.name, e.summary, e.origin) for e in self]
        found = {row.name: row for module in self._builtins for path in _source_files(module)
                 for row in _registrations(path, self.symbol)}
        found.update({e.name: Listed(e.name, e.summary, e.origin) for e in self._entries.values()})
        return sorted(found.values())

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> Entry[T]:
        """The entry for `name` (a registered name, an installed plug-in's name, or a
        `module.path:Name` reference), or a UserError naming the valid choices."""
        self._load_builtins()
        entry = self._entries.get(name) or self._load_plugin(name)
        if entry is None:
            self._refuse_unknown(name, sorted(set(self.names()) | set(self.installed_plugins())))
        return entry

    def check_name(self, name: str) -> None:
        """A UserError for a name that is no built-in or installed entry, read from the sources
        without importing them (no torch): a misspelt name is refused at once, with the nearest
        names. References (module.path:Name) and prefixed names (timm/NAME) are left to `get`."""
        if ":" in name or "/" in name or name in self._entries:
            return
        choices = sorted({row.name for row in self.listing()})
        if name not in choices:
            self._refuse_unknown(name, choices)

    def _refuse_unknown(self, name: str, choices: list[str]) -> None:
        import difflib

        near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise UserError(f"unknown {self.kind} '{name}'; {hint}choose from: {', '.join(choices)} "
                        f"(or a plug-in, module.path:Name)")

    def create(self, name: str, *args: Any, **options: Any) -> T:
        """Build `name` with keyword `options`. The factory is checked against the role first;
        unknown option names, option values of another type than the signature declares, and
        values the factory rejects with a ValueError or TypeError give a one-line UserError
        naming them; so does a factory that builds something other than the role's type."""
        factory = self.get(name).factory
        self.check_factory(name, factory)
        options = self.check_options(name, factory, options)
        try:
            product = factory(*args, **options)
        except (ValueError, TypeError) as error:
            message = " ".join(str(error).split())  # one line, even from a multi-line message
            if options and not any(re.search(rf"\b{re.escape(key)}\b", message) for key in options):
                given = ", ".join(f"{key}={short(value)}" for key, value in options.items())
                message = f"rejects {given}: {message}"
            raise UserError(f"{self.kind} '{name}': {clip(message, 300)}") from None
        if self.role is not None and not self.role.produces(product):
            raise UserError(f"{self.kind} '{name}' built {_what(product)}, not {self.role.product}")
        return product

    def create_options(self, name: str, factory: Callable[..., Any], options: dict[str, Any]) -> Any:
        """`factory(**options)`, an entry's own options object (a benchmark's preprocessing),
        checked as `create` checks an entry's options: one UserError line naming a bad one."""
        options = self.check_options(name, factory, options)
        try:
            return factory(**options)
        except (ValueError, TypeError) as error:
            raise UserError(f"{self.kind} '{name}': {clip(' '.join(str(error).split()), 300)}") from None

    def check_options(self, name: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
        """`options` checked against the factory's keyword options: known names (unless it
        takes **kwargs) and values of the declared types (schema.check_value)."""
        strange = [key for key in options if not isinstance(key, str) or not key.isidentifier()]
        if strange:
            raise UserError(f"{self.kind} '{name}': option names must be identifiers (got {short(strange[0])})")
        accepted = option_types(factory)
        unknown = sorted(set(options) - set(accepted))
        if unknown and not accepts_var_kwargs(factory):
            valid = f"its options: {', '.join(accepted)}" if accepted else "it takes no options"
            raise UserError(f"{self.kind} '{name}' has no option {', '.join(unknown)}; {valid}")
        try:
            return {key: check_value(value, accepted.get(key, Any), f"option {key}") for key, value in options.items()}
        except SchemaError as error:
            raise UserError(f"{self.kind} '{name}': {error}") from None


def _broken_plugin(*args: Any, **options: Any) -> Any:
    raise UserError("this plug-in cannot be imported")


def _attribute(module: str, attribute: str) -> Any:
    """`module.attribute`, the working folder importable as it is for `python -m`."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # `metaaug` runs as a script: its sys.path lacks the working folder
    # no __pycache__ in the user's folder: a command that fails must leave nothing behind
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        target = importlib.import_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    try:
        return getattr(target, attribute)
    except AttributeError:
        raise UserError(f"module '{module}' ({_module_origin(module)}) has no '{attribute}'") from None


def _module_origin(module: str) -> str:
    """Where `module` was imported from: its file, shortened to the working folder when inside."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return module
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:  # another drive (Windows)
        return path


def _import_plugin(kind: str, name: str, load: Callable[[], Any]) -> Any:
    """load(), with anything it raises turned into one UserError line naming plug-in `name`."""
    try:
        return load()
    except UserError:
        raise
    except ModuleNotFoundError as error:
        raise UserError(f"{kind} plug-in '{name}' cannot be imported: {error} (looked in the environment and the "
                        f"working folder {os.getcwd()})") from None
    except Exception as error:  # a plug-in's own import error: its message, on one line
        detail = " ".join(str(error).split())
        raise UserError(f"{kind} plug-in '{name}' failed to import: {type(error).__name__}: {detail}") from None


POLICIES: Registry[Any] = Registry("policy", builtins=(
    "metaaugment.baselines", "metaaugment.sample_aware", "metaaugment.rl_mixup", "metaaugment.task_augmentation",
    "metaaugment.madaug", "metaaugment.adaaug", "metaaugment.mlti", "metaaugment.teachaugment"),
    group="metaaugment.policies", role=POLICY_ROLE, symbol="POLICIES")
LEARNERS: Registry[Any] = Registry("learner", builtins=("metaaugment.learners",), group="metaaugment.learners",
                                   role=LEARNER_ROLE, symbol="LEARNERS")
MODELS: Registry[Any] = Registry("model", builtins=("metaaugment.models",), group="metaaugment.models",
                                 role=MODEL_ROLE, symbol="MODELS")
BENCHMARKS: Registry[Any] = Registry("benchmark", builtins=("metaaugment.tasks",), group="metaaugment.benchmarks",
                                     role=BENCHMARK_ROLE, symbol="BENCHMARKS")


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
