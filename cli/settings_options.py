"""`run` and `compare` options generated from RunConfig's fields (as tyro reads cleanrl's
`Args`): each field's type, default and help (`metaaugment.run.config.setting`) become one
typer option, so a new run setting is one field and appears on both commands by itself."""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from metaaugment.run.config import RunConfig, cli_metadata
from metaaugment.run.settings import CommandLine, command_line_fields

LR_HELP = "Learning rate; the outer (meta) rate for meta-learners (default: the benchmark's)."


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether parameter `name` was given on the command line (or by its environment variable)."""
    source = ctx.get_parameter_source(name)  # by name: typer may carry its own copy of click's enum
    return getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")


def _optional(kind: Any) -> Any:
    """`int | None` as typer reads it (Optional[int])."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        return Optional[members[0]] if len(members) == 1 else kind
    return kind


def _parameter(config_field: dataclasses.Field, kind: Any) -> inspect.Parameter:
    """The typer parameter of one RunConfig field."""
    meta = cli_metadata(config_field)
    if meta["argument"]:
        annotation: Any = Annotated[Optional[_optional(kind)], typer.Argument(help=meta["help"], show_default=False)]
        return inspect.Parameter(config_field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=annotation)
    names = [meta["flag"] or "--" + config_field.name.replace("_", "-"), *([meta["short"]] if meta["short"] else [])]
    if meta["option_list"]:
        annotation = Annotated[Optional[List[str]], typer.Option(*names, help=meta["help"])]
        default = None
    else:
        annotation = Annotated[_optional(kind), typer.Option(*names, help=meta["help"], envvar=meta["envvar"])]
        default = config_field.default
    return inspect.Parameter(config_field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def with_run_settings(command: str, config_class: type = RunConfig) -> Callable[[Callable], Callable]:
    """Decorate a typer command `function(ctx, settings: CommandLine, ...)`: its signature gains
    one option per field of `config_class` that `command` takes (and --lr), and it receives
    what the command line gave of them as `settings` (`metaaugment.run.settings.CommandLine`)."""
    hints = typing.get_type_hints(config_class)
    fields = command_line_fields(command, config_class)

    def decorate(function: Callable) -> Callable:
        own = list(inspect.signature(function, eval_str=True).parameters.values())
        arguments = [_parameter(f, hints[f.name]) for f in fields if cli_metadata(f)["argument"]]
        options = [_parameter(f, hints[f.name]) for f in fields if not cli_metadata(f)["argument"]]
        options.append(inspect.Parameter("lr", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=Annotated[Optional[float], typer.Option("--lr", help=LR_HELP)]))
        generated = arguments + options
        context = [p for p in own if p.name == "ctx"]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.name not in ("ctx", "settings")]
        parameters = context + arguments + rest + options
        names = {p.name for p in generated}

        def command_function(**kwargs: Any) -> Any:
            ctx = kwargs["ctx"]
            values = {name: kwargs.pop(name) for name in names}
            command_line = CommandLine(lr=values.pop("lr"))
            for config_field in fields:
                value, meta = values[config_field.name], cli_metadata(config_field)
                if meta["option_list"]:
                    command_line.option_sets[config_field.name] = list(value or [])
                elif given_on_command_line(ctx, config_field.name) or (meta["argument"] and value is not None):
                    command_line.given[config_field.name] = str(value) if isinstance(value, Path) else value
            return function(settings=command_line, **kwargs)

        command_function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command_function.__annotations__ = {p.name: p.annotation for p in parameters}
        command_function.__name__, command_function.__doc__ = function.__name__, function.__doc__
        command_function.__module__ = function.__module__
        return command_function

    return decorate

