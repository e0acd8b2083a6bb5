"""--device resolution: auto picks CUDA when present; impossible requests are user errors."""
import pytest
import torch

from metaaugment.infra.errors import UserError
from metaaugment.run.devices import resolve_device


def test_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_unavailable_or_unknown_devices_are_user_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")
