"""RL-Mixup's saliency and patch mixup (Eqs. 1-4) and the saliency-mixup control policy."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy
from metaaugment.rl_mixup.saliency import (
    action_to_percentile,
    input_saliency,
    patch_mixup,
    patch_saliency,
    percentile_masks,
)


def per_sample(out, y):
    return F.cross_entropy(out, y, reduction="none")


def test_saliency_is_the_channel_l2_norm_of_the_input_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x, y = torch.rand(3, 3, 6, 6), torch.tensor([0, 3, 1])
    xr = x.clone().requires_grad_()
    F.cross_entropy(model(xr), y, reduction="sum").backward()
    expected = torch.sqrt((xr.grad ** 2).sum(dim=1))
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(input_saliency(model, x, y, per_sample), expected)
    assert all(p.grad is None for p in model.parameters())  # parameters untouched
    pooled = patch_saliency(expected, 3)
    assert pooled.shape == (3, 3, 3)
    torch.testing.assert_close(pooled.sum(dim=(1, 2)), torch.ones(3))
    torch.testing.assert_close(pooled[0, 0, 0] / pooled[0, 1, 1],
                               expected[0, :2, :2].mean() / expected[0, 2:4, 2:4].mean())


def test_action_to_percentile_mapping():
    assert action_to_percentile(torch.arange(10)).tolist() == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]


def test_percentile_masks_follow_eq1():
    saliency = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    for q, active in ((0.0, 16), (50.0, 8), (99.0, 1)):
        mask = percentile_masks(saliency, torch.tensor([q]))
        assert int(mask.sum()) == active
        threshold = torch.quantile(saliency.flatten(), q / 100)
        assert torch.equal(mask, saliency >= threshold)


def test_mixed_labels_are_eq4_area_proportions_on_a_hand_built_case():
    # 2 x 2 patches on 4 x 4 images; m1 = top row, m2 = left column
    m1 = torch.tensor([[[True, True], [False, False]]])
    m2 = torch.tensor([[[True, False], [True, False]]])
    # agree on (0,0) (both 1) and (1,1) (both 0): half the image is mixed, (0,1) is x1's, (1,0) is x2's
    x1, x2 = torch.full((1, 1, 4, 4), 0.2), torch.full((1, 1, 4, 4), 0.8)
    y1, y2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    lam1, lam2 = torch.tensor([0.3]), torch.tensor([0.7])
    before = x1.clone()
    mixed, labels = patch_mixup(x1, y1, x2, y2, m1, m2, lam1, lam2)
    expected = 0.5 * (0.3 * y1 + 0.7 * y2) + 0.25 * y1 + 0.25 * y2
    torch.testing.assert_close(labels, expected)
    assert labels.sum().item() == pytest.approx(1.0)
    blend = 0.3 * 0.2 + 0.7 * 0.8
    assert torch.allclose(mixed[0, 0, :2, :2], torch.tensor(blend))
    assert torch.allclose(mixed[0, 0, 2:, 2:], torch.tensor(blend))
    assert torch.allclose(mixed[0, 0, :2, 2:], torch.tensor(0.2))
    assert torch.allclose(mixed[0, 0, 2:, :2], torch.tensor(0.8))
    assert torch.equal(x1, before)


def test_when_masks_agree_everywhere_it_is_plain_mixup():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    y1, y2 = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).float(), F.one_hot(torch.tensor([4, 3, 2, 1]), 5).float()
    lam = torch.distributions.Dirichlet(torch.tensor([0.5, 0.5])).sample((4,))
    masks = torch.rand(4, 4, 4, generator=g) > 0.5
    mixed, labels = patch_mixup(x1, y1, x2, y2, masks, masks.clone(), lam[:, 0], lam[:, 1])
    torch.testing.assert_close(mixed, lam[:, 0].view(-1, 1, 1, 1) * x1 + lam[:, 1].view(-1, 1, 1, 1) * x2)
    torch.testing.assert_close(labels, lam[:, :1] * y1 + lam[:, 1:] * y2)


def test_saliency_mixup_policy_mixes_with_soft_labels_and_keeps_bn_statistics():
    spec = TaskSpec(num_classes=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    model = create_model("small-cnn", spec, width=4)
    policy = create_policy("saliency-mixup", q=50)
    ctx = StepContext(model=model, spec=spec)
    policy.setup(ctx)
    assert policy.patches == 8  # one patch per pixel on images smaller than 16 x 16
    batch = Batch(torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,)))
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    out = policy.augment(batch, ctx)
    assert out.targets.shape == (6, 4)
    torch.testing.assert_close(out.targets.sum(1), torch.ones(6))
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert (out.params.masks.flatten(1).float().mean(1) >= 0.5).all()  # q = 50: at least half the patches
