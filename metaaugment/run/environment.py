"""A record of the software and hardware a run used, for results.json."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(device: torch.device) -> dict[str, Any]:
    """Versions, platform and the device actually used."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "packages": {p: _version(p) for p in ("metaaugment", "torch", "torchvision", "numpy", "higher", "learn2learn")},
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info
