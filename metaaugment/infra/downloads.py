"""Network access only when the command line asks for it.

A model option that downloads weights (timm's `pretrained`) is honoured when the user typed
it (`--model-set pretrained=true`, or Python), never because a file said so: a config or
sweep file that sets it is refused in one line, and a model rebuilt to receive weights from
a file (a resumed checkpoint, eval, export, --policy-from, an exported model.pt) is built
without downloading.
"""
from __future__ import annotations

from typing import Any, Iterable

from metaaugment.infra.errors import UserError

DOWNLOAD_OPTIONS = ("pretrained",)  # model options that fetch weights from the network


def offline_options(model_options: dict[str, Any]) -> dict[str, Any]:
    """`model_options` with every download option off: the weights come from a file."""
    return {key: (False if key in DOWNLOAD_OPTIONS else value) for key, value in model_options.items()}


def refuse_downloads_from_file(model_options: Any, source: str, typed: Iterable[str] = ()) -> None:
    """A UserError when `model_options` (read from `source`, a file) turn on a download option
    the command line did not give (`typed`: the option names given there)."""
    if not isinstance(model_options, dict):
        return
    given = set(typed)
    for key in DOWNLOAD_OPTIONS:
        if model_options.get(key) and key not in given:
            raise UserError(f"{source} sets model option {key}={model_options[key]!r}, which downloads weights: a file "
                            f"never makes metaaugment reach the network; give --model-set {key}=true on the command "
                            f"line")
