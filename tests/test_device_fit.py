"""The estimate a CPU run makes before its first step, and the one line it prints when the
settings are a GPU's (ImageNet's defaults on a laptop)."""
from __future__ import annotations

import torch
from torch import nn

from metaaugment.run.device_fit import TrainingEstimate, cpu_fit_warning, estimate_training, forward_footprint


def test_the_estimate_is_the_documented_formula_on_a_model_counted_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    activation_bytes, _ = forward_footprint(model, (3, 8, 8), "cpu")
    # conv 4x8x8, relu 4x8x8, flatten 256, linear 5 floats of one sample
    assert activation_bytes == 4 * (256 + 256 + 256 + 5)
    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    estimate = estimate_training(model, (3, 8, 8), batch_size=10, total_steps=7, device="cpu")
    parameters = 3 * 4 * 9 + 4 + 256 * 5 + 5
    assert estimate.memory_bytes == 4 * 4 * parameters + 10 * activation_bytes
    assert abs(estimate.run_s - 7 * estimate.step_s) < 1e-12 and estimate.step_s > 0


def test_imagenet_defaults_on_a_cpu_warn_with_a_cpu_sized_alternative_and_small_settings_do_not():
    from metaaugment.registry import create_model
    from metaaugment.spec import TaskSpec

    spec = TaskSpec(num_classes=10, input_shape=(3, 224, 224), mean=(0.5,) * 3, std=(0.25,) * 3)
    resnet50 = create_model("resnet50", spec)
    # the new user's 4,000 photos: 15 steps of 256 per epoch, 90 epochs
    estimate = estimate_training(resnet50, (3, 224, 224), 256, 15 * 90, "cpu")
    assert estimate.memory_bytes > 25 * 2**30  # ~31 GB: 256 samples of ~125 MB of activations
    warning = cpu_fit_warning(estimate, model="resnet50", image_size=224, batch_size=256, epochs=90,
                              takes_image_size=True, takes_crop=True, machine_bytes=24 * 2**30)
    assert warning.startswith("warning: resnet50 at 224 px, batch 256, is sized for a GPU") and "\n" not in warning
    assert "of this machine's 24 GB" in warning
    assert warning.endswith("--model small-convnet --image-size 32 --benchmark-set crop=pad --batch-size 128 "
                            "(docs/datasets.md, 'Your own data on a laptop')")
    small = TrainingEstimate(memory_bytes=2**30, step_s=0.4, run_s=0.4 * 32 * 30)
    assert cpu_fit_warning(small, model="small-convnet", image_size=32, batch_size=128, epochs=30,
                           takes_image_size=True, takes_crop=True, machine_bytes=24 * 2**30) is None
    slow = TrainingEstimate(memory_bytes=2**30, step_s=10.0, run_s=3 * 3600.0)  # fits, but takes hours
    assert "3 h for 30 epochs" in cpu_fit_warning(slow, model="resnet18", image_size=32, batch_size=128, epochs=30,
                                                  takes_image_size=False, takes_crop=False, machine_bytes=None)
