"""MADAug: the curriculum's formula, the head's batched ops and straight-through magnitudes,
and the head's hypergradient through the lookahead against finite differences."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metaaugment.adaaug.head import HEAD_OPS, AugmentationHead, explore_mixture, head_parameters, straight_through
from metaaugment.losses import per_sample_cross_entropy
from metaaugment.madaug import augmented_fraction
from metaaugment.sample_aware.lookahead import input_lookahead
from metaaugment.sample_aware.ops import MAX_MAGNITUDE, apply_ops


def test_the_curriculum_augments_min_tanh_epoch_over_tau_plus_one_percent():
    assert augmented_fraction(0, 40.0) == pytest.approx(0.01)
    assert augmented_fraction(40, 40.0) == pytest.approx(math.tanh(1.0) + 0.01)
    assert augmented_fraction(200, 40.0) == 1.0


def test_the_explore_mixture_is_the_probability_weighted_sum_of_every_op_with_magnitudes_straight_through():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 12, 12)
    probabilities = torch.softmax(torch.randn(3, len(HEAD_OPS)), 1).requires_grad_()
    magnitudes = torch.rand(3, len(HEAD_OPS)).requires_grad_()
    signs = torch.where(torch.rand(3, len(HEAD_OPS)) < 0.5, -1.0, 1.0)
    mixed = explore_mixture(images, probabilities, magnitudes, signs)
    expected = sum(probabilities[:, k, None, None, None] * apply_ops(
        images, torch.full((3,), k), MAX_MAGNITUDE * magnitudes[:, k].detach(), signs[:, k], HEAD_OPS)
        for k in range(len(HEAD_OPS)))
    torch.testing.assert_close(mixed, expected.detach(), rtol=1e-5, atol=1e-6)
    mixed.sum().backward()
    # d mixed / d m_k = p_k at every pixel (straight through), d / d p_k = op_k(x)'s pixel sum
    torch.testing.assert_close(magnitudes.grad, probabilities.detach() * 3 * 12 * 12, rtol=1e-5, atol=1e-4)
    one = straight_through(torch.ones(2, 1, 2, 2), torch.tensor([0.3, 0.6], requires_grad=True))
    assert torch.equal(one.detach(), torch.ones(2, 1, 2, 2))


@pytest.mark.parametrize("engine", ["fast", "higher"])
def test_the_heads_hypergradient_through_the_lookahead_matches_finite_differences(engine):
    """dL_val(w - lr grad L_train(w, x(phi)))/dphi for the head's parameters phi, against a
    central difference of the whole function in float64 (both engines, BatchNorm included;
    a step of 1e-6: ReLU and the ops are piecewise smooth)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 5)).double()
    head = AugmentationHead(6, len(HEAD_OPS)).double()
    images, labels = torch.rand(8, 3, 10, 10, dtype=torch.float64), torch.randint(0, 5, (8,))
    val_images, val_labels = torch.rand(6, 3, 10, 10, dtype=torch.float64), torch.randint(0, 5, (6,))
    features = torch.randn(8, 6, dtype=torch.float64)
    signs = torch.where(torch.rand(8, len(HEAD_OPS)) < 0.5, -1.0, 1.0)

    def val_loss(parameters):
        outputs = torch.func.functional_call(head, parameters, (features,))
        probabilities, magnitudes = head_parameters(outputs)
        mixed = explore_mixture(images, probabilities, magnitudes, signs)
        return input_lookahead(model, mixed, labels, val_images, val_labels, per_sample_cross_entropy, 0.5,
                               list(parameters.values()), engine=engine)

    parameters = {n: p.detach().clone().requires_grad_() for n, p in head.named_parameters()}
    grads, _ = val_loss(parameters)
    # along the op logits only (the last K rows of the head's layer): the magnitudes stay, so the
    # ops' images stay and the difference sees what the gradient is of (the magnitudes' own
    # path is the straight-through estimate, checked above)
    direction = {n: torch.randn_like(p) for n, p in parameters.items()}
    for tensor in direction.values():
        tensor[:len(HEAD_OPS)] = 0
    eps = 1e-6
    plus = val_loss({n: (p + eps * direction[n]).detach().requires_grad_() for n, p in parameters.items()})[1]
    minus = val_loss({n: (p - eps * direction[n]).detach().requires_grad_() for n, p in parameters.items()})[1]
    analytic = sum(float((g * direction[n]).sum()) for g, n in zip(grads, parameters))
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-4, abs=1e-9)
