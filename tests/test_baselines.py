"""Behaviour of the torchvision-backed baselines, checked against their definitions."""
import pytest
import torch

from metaaugment import Batch, StepContext, TaskSpec, create_policy
from metaaugment.infra.errors import UserError

SPEC = TaskSpec(num_classes=4, input_shape=(1, 8, 8))
CTX = StepContext(model=torch.nn.Identity(), spec=SPEC)


def constant_images(values):
    """(B, 1, 8, 8) images, image i filled with values[i]: every pixel names its source."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()


def make(name, **options):
    policy = create_policy(name, **options)
    policy.setup(CTX)
    return policy


def test_mixup_image_and_label_use_the_same_lambda():
    torch.manual_seed(0)
    values = [0.0, 1.0, 0.25, 0.75]
    batch = Batch(constant_images(values), torch.tensor([0, 1, 2, 3]))
    out = make("mixup", alpha=0.4).augment(batch, CTX)
    torch.testing.assert_close(out.targets.sum(1), torch.ones(4))
    # torchvision pairs sample i with sample i-1; recover lambda from the label of sample 1
    # (classes 1 and 0) and check the pixels obey the same convex combination.
    lam = out.targets[1, 1].item()
    assert out.targets[1, 0].item() == pytest.approx(1 - lam, abs=1e-6)
    for i in range(4):
        j = (i - 1) % 4
        expected = lam * values[i] + (1 - lam) * values[j]
        torch.testing.assert_close(out.inputs[i], torch.full((1, 8, 8), expected))


def test_cutmix_label_share_equals_pasted_area():
    torch.manual_seed(1)
    batch = Batch(constant_images([0.0, 1.0, 0.0, 1.0]), torch.tensor([0, 1, 2, 3]))
    out = make("cutmix").augment(batch, CTX)
    torch.testing.assert_close(out.targets.sum(1), torch.ones(4))
    # Sample 0 (all zeros) receives a box from sample 3 (all ones): pasted area = label share.
    pasted = out.inputs[0].mean().item()
    assert out.targets[0, 3].item() == pytest.approx(pasted, abs=1e-6)
    assert out.targets[0, 0].item() == pytest.approx(1 - pasted, abs=1e-6)


def test_cutout_zeroes_exactly_one_square_and_keeps_labels():
    torch.manual_seed(2)
    batch = Batch(torch.ones(16, 1, 8, 8), torch.arange(16) % 4)
    out = make("cutout", size=3).augment(batch, CTX)
    zeros = out.inputs == 0
    assert (zeros.sum(dim=(1, 2, 3)) == 9).all()
    for mask in zeros[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == 3 and len(cols) == 3 and rows[-1] - rows[0] == 2  # one 3x3 block
    assert torch.equal(out.targets, batch.targets)
    positions = {tuple(m.nonzero()[0].tolist()) for m in zeros[:, 0]}
    assert len(positions) > 1, "each image must get its own square"


def test_cutout_default_is_half_the_side():
    assert make("cutout").size == 4
    cifar = create_policy("cutout")
    cifar.setup(StepContext(model=torch.nn.Identity(), spec=TaskSpec(num_classes=10, input_shape=(3, 32, 32))))
    assert cifar.size == 16  # the paper's 16x16 on CIFAR


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment"])
def test_automatic_policies_draw_ops_per_sample(name):
    torch.manual_seed(3)
    image = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    batch = Batch(image.expand(32, 1, 8, 8).clone(), torch.zeros(32, dtype=torch.long))
    out = make(name).augment(batch, CTX)
    distinct = {tuple(x.flatten().tolist()) for x in out.inputs}
    assert len(distinct) > 4, "identical inputs must receive different random ops"
    assert torch.equal(out.targets, batch.targets)


def test_invalid_options_are_user_errors():
    with pytest.raises(UserError, match="magnitude"):
        create_policy("randaugment", magnitude=40)
    with pytest.raises(UserError, match="cifar10, imagenet, svhn"):
        create_policy("autoaugment", policy="mnist")
    with pytest.raises(UserError, match="alpha"):
        create_policy("mixup", alpha=0)
    with pytest.raises(UserError, match="no option"):
        create_policy("none", strength=1)
