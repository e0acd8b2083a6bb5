"""TeachAugment (metaaugment.teachaugment): its operations against their formulas, augmenters
that start as the identity, the update's direction, the teacher's average, the frozen
BatchNorm statistics and the replay buffer's priorities. (The batch contract, the state round
trip and two ranks against one process: tests/test_policy_contract.py.)"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metaaugment import Batch, StepContext, TaskSpec, create_model
from metaaugment.registry import create_policy
from metaaugment.teachaugment.ops import (
    affine_transform,
    non_saturating_loss,
    relaxed_bernoulli,
    sliced_wasserstein,
    triangle_wave,
)

SPEC = TaskSpec(num_classes=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
SMALL = dict(noise_dim=4, hidden=4, projections=8)


def test_relaxed_bernoulli_applies_with_the_probability_of_its_logit():
    """At a low temperature the relaxed sample is nearly 0 or 1, and 1 with probability sigmoid(logit)."""
    u = torch.rand(40_000, generator=torch.Generator().manual_seed(0)).clamp(1e-6, 1 - 1e-6)
    sample = relaxed_bernoulli(torch.full_like(u, 0.7), u, 0.05)
    assert sample.mean().item() == pytest.approx(1 / (1 + math.exp(-0.7)), abs=0.01)
    assert ((sample < 0.05) | (sample > 0.95)).float().mean() > 0.9


def test_the_triangle_wave_folds_values_into_the_unit_interval_with_slope_one():
    values = torch.tensor([0.3, 1.2, -0.1, 2.3, -1.4], requires_grad=True)
    folded = triangle_wave(values)
    torch.testing.assert_close(folded, torch.tensor([0.3, 0.8, 0.1, 0.3, 0.6]))
    folded.sum().backward()
    assert values.grad.tolist() == [1.0, -1.0, -1.0, 1.0, 1.0]


def test_the_affine_transform_is_the_identity_at_the_identity_and_shifts_by_whole_pixels():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(affine_transform(images, identity), images)
    shift = identity.clone()
    shift[:, 0, 2] = 2 * 2 / 8  # two pixels, in [-1, 1] coordinates: output x reads input x + 2
    shifted = affine_transform(images, shift)
    torch.testing.assert_close(shifted[..., :6], images[..., 2:])
    assert shifted[..., 6:].abs().max() == 0


def test_the_sliced_wasserstein_distance_compares_colour_distributions():
    """Zero for the same pixels in any order; for a colour shift c of every pixel, the mean
    over the unit directions d of (c . d)^2."""
    g = torch.Generator().manual_seed(2)
    images, directions = torch.rand(2, 3, 4, 4, generator=g), torch.randn(3, 16, generator=g)
    shuffled = images.flatten(2)[:, :, torch.randperm(16, generator=g)].view_as(images)
    assert sliced_wasserstein(images, shuffled, directions).abs().max() < 1e-12
    c = torch.tensor([0.1, -0.2, 0.05])
    unit = directions / directions.norm(dim=0)
    expected = ((c @ unit) ** 2).mean()
    torch.testing.assert_close(sliced_wasserstein(images, images + c.view(1, 3, 1, 1), directions),
                               expected.expand(2))


def test_the_adversarial_loss_is_minus_log_one_minus_the_labels_probability():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    p = logits.softmax(1)
    assert non_saturating_loss(logits, labels).item() == pytest.approx(-math.log(1 - p[0, 0].item()), rel=1e-5)
    smoothed = non_saturating_loss(logits, labels, smoothing=0.3)
    target = torch.tensor([0.8, 0.1, 0.1])
    assert smoothed.item() == pytest.approx(-(target * torch.log(1 - p[0])).sum().item(), rel=1e-5)


def set_up(**options):
    torch.manual_seed(0)
    model = create_model("small-cnn", SPEC, width=4)
    ctx = StepContext(model=model, spec=SPEC)
    policy = create_policy("teachaugment", **SMALL, **options)
    policy.setup(ctx)
    return policy, ctx


def batch(seed: int = 3, rows: int = 16) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(rows, 3, 8, 8, generator=g) * 0.9 + 0.05, torch.randint(0, 4, (rows,), generator=g))


def test_the_augmenters_start_as_the_identity():
    """Their output layers start at zero (the paper's initialization): scale 1, shift 0 and
    the identity matrix, so the first images the target sees are the originals."""
    policy, ctx = set_up()
    images = batch()
    augmented, coloured = policy.augmenter(images.inputs, images.targets, policy.make_params(images, ctx), ctx.comm)
    torch.testing.assert_close(coloured, images.inputs)
    torch.testing.assert_close(augmented, images.inputs, atol=1e-6, rtol=0)


def objective(policy, ctx, images, draws) -> float:
    """The augmenter's objective (adversarial + teacher + colour terms) at fixed draws."""
    with torch.no_grad():
        augmented, coloured = policy.augmenter(images.inputs, images.targets, draws, ctx.comm)
        adversarial = non_saturating_loss(ctx.model(augmented), images.targets, policy.label_smoothing).mean()
        teacher = F.cross_entropy(policy.teacher(augmented), images.targets)
        colour = policy.colour_weight * sliced_wasserstein(images.inputs, coloured, draws.projections).mean()
    return float(adversarial + teacher + colour)


def test_the_augmenter_steps_lower_its_objective_and_leave_the_targets_statistics_alone():
    """The update descends adversarial + teacher + colour terms (a sign error would climb),
    and the target network's BatchNorm running statistics do not count the augmenter's pass."""
    policy, ctx = set_up(augmenter_lr=1e-2)
    images = batch()
    draws = policy.make_params(images, ctx)
    before = objective(policy, ctx, images, draws)
    statistics = {k: v.clone() for k, v in ctx.model.state_dict().items() if "running" in k}
    for _ in range(10):
        policy._learn(images.inputs, images.targets, draws, len(images), ctx)
    assert all(torch.equal(v, ctx.model.state_dict()[k]) for k, v in statistics.items())
    assert objective(policy, ctx, images, draws) < before - 1e-3
    assert set(policy.last) >= {"augmenter_adversarial_loss", "augmenter_teacher_loss", "augmented_teacher_accuracy"}


def test_the_teacher_is_an_exponential_moving_average_of_the_target():
    policy, ctx = set_up(ema_rate=0.9, update_every=1000)
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(1.0)
    old = [p.clone() for p in policy.teacher.parameters()]
    policy.augment(batch(), ctx)
    for averaged, previous, current in zip(policy.teacher.parameters(), old, ctx.model.parameters()):
        torch.testing.assert_close(averaged, 0.9 * previous + 0.1 * current)


def test_the_replay_buffer_stores_every_few_epochs_and_groups_draw_by_priority():
    policy, ctx = set_up(replay_every=2, replay_decay=0.5, group_size=4)
    for epoch in range(4):
        ctx.epoch = epoch
        policy.on_epoch_end(ctx)
    assert len(policy.replay) == 2 and policy.priorities == [0.25, 0.5]
    chosen = torch.cat([policy.make_params(batch(rows=64), ctx).augmenter for _ in range(200)])
    groups = chosen.view(-1, 4)
    assert (groups == groups[:, :1]).all()  # a group of 4 rows shares its augmenter
    shares = torch.bincount(groups[:, 0], minlength=3).float() / len(groups)
    torch.testing.assert_close(shares, torch.tensor([0.25, 0.5, 1.0]) / 1.75, atol=0.03, rtol=0)
