"""Batched RandAugment, TrivialAugment Wide and Cutout against torchvision's definitions."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from metaaugment import Batch, StepContext, TaskSpec, create_policy
from metaaugment.baselines import batched
from metaaugment.imageops import apply_named_ops, cutout, draw_ops, op_table

SIZE = (24, 28)


def chi_square(counts: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


# the 0.999 quantile of chi-square with k degrees of freedom, by the Wilson-Hilferty approximation
def chi_square_bound(k: int) -> float:
    z = 3.09
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


@pytest.mark.parametrize("ours, theirs", [
    (batched.randaugment_space(31, SIZE), v2.RandAugment._AUGMENTATION_SPACE),
    (batched.trivialaugment_space(31), v2.TrivialAugmentWide._AUGMENTATION_SPACE),
    (batched.randaugment_space(5, SIZE), v2.RandAugment._AUGMENTATION_SPACE),
])
def test_the_op_spaces_are_torchvision_s(ours, theirs):
    assert list(ours) == list(theirs)  # the same ops, in torchvision's order
    bins = max(values.numel() for values, _ in ours.values())
    for name, (make, signed) in theirs.items():
        values, our_signed = ours[name]
        expected = make(bins, *SIZE)
        assert our_signed == signed, name
        if expected is None:
            assert values.ndim == 0 and float(values) == 0.0, name
        else:
            assert torch.equal(values, expected), name


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_ops_signs_and_magnitude_bins_are_drawn_uniformly(policy):
    count = 28_000
    space = batched.randaugment_space(31, SIZE) if policy == "randaugment" else batched.trivialaugment_space(31)
    bin_ = 9 if policy == "randaugment" else None
    names, values = draw_ops(count, op_table(space), bin_, torch.Generator().manual_seed(0))
    ops = list(space)
    counts = torch.tensor([names.count(op) for op in ops], dtype=torch.float64)
    assert chi_square(counts, torch.full((len(ops),), count / len(ops))) < chi_square_bound(len(ops) - 1)
    for op, neutral in (("Rotate", 0.0), ("Brightness", 1.0)):  # signed: half of each sign
        drawn = torch.tensor([v for n, v in zip(names, values) if n == op and v != neutral])
        negative = float((drawn < neutral).sum())
        assert abs(negative - len(drawn) / 2) < 3.3 * math.sqrt(len(drawn) / 4), op
    rotations = torch.tensor([abs(v) for n, v in zip(names, values) if n == "Rotate"])
    grid = space["Rotate"][0]
    if bin_ is not None:  # RandAugment: every sample at the global magnitude
        assert torch.allclose(rotations, grid[bin_].expand_as(rotations))
    else:  # TrivialAugment: bins uniform over the 31
        found = torch.tensor([int(torch.argmin((grid - r).abs())) for r in rotations])
        per_bin = torch.bincount(found, minlength=31).double()
        assert chi_square(per_bin, torch.full((31,), len(found) / 31)) < chi_square_bound(30)


def test_each_drawn_op_is_torchvision_s_op_on_its_sample():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(64, 3, *SIZE, generator=g)
    names, values = draw_ops(64, op_table(batched.randaugment_space(31, SIZE)), 17, g)
    out = apply_named_ops(images, names, values)
    for image, name, value, result in zip(images, names, values, out):
        if name == "ShearX":
            expected = TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, center=[0, 0],
                                 shear=[math.degrees(math.atan(value)), 0.0])
        elif name == "TranslateY":
            expected = TF.affine(image, angle=0.0, translate=[0, int(value)], scale=1.0, shear=[0.0, 0.0])
        elif name == "Rotate":
            expected = TF.rotate(image, value)
        elif name == "Contrast":  # the argument is torchvision's factor, 1 + signed magnitude
            expected = TF.adjust_contrast(image, value)
        elif name == "Brightness":
            expected = TF.adjust_brightness(image, value)
        elif name == "Posterize":
            expected = TF.posterize(image, int(value))
        elif name == "Solarize":
            expected = TF.solarize(image, value)
        elif name == "Equalize":
            expected = TF.equalize(image)
        else:
            continue
        torch.testing.assert_close(result, expected, atol=1e-6, rtol=0, msg=name)


def test_cutout_zeroes_one_square_that_fits_per_sample():
    images = torch.rand(500, 2, 10, 12) + 0.1
    out = cutout(images, 4, torch.Generator().manual_seed(0), placement="inside")
    zeroed = out[:, 0] == 0
    assert torch.equal(zeroed, out[:, 1] == 0) and (zeroed.sum(dim=(1, 2)) == 16).all()
    rows, cols = zeroed.any(2).float().argmax(1), zeroed.any(1).float().argmax(1)
    assert rows.max() == 10 - 4 and cols.max() == 12 - 4 and rows.min() == 0 and cols.min() == 0
    # placements uniform over the 7 x 9 positions
    positions = torch.bincount(rows * 9 + cols, minlength=63).double()
    assert chi_square(positions, torch.full((63,), 500 / 63)) < chi_square_bound(62)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment", "cutout"])
def test_both_backends_run_and_keep_the_batch(name):
    spec = TaskSpec(num_classes=3, input_shape=(3, *SIZE))
    batch = Batch(torch.rand(8, 3, *SIZE), torch.arange(8) % 3)
    for backend in ("batched", "torchvision"):
        policy = create_policy(name, backend=backend)
        policy.setup(StepContext(model=torch.nn.Identity(), spec=spec))
        torch.manual_seed(0)
        out = policy.augment(batch, StepContext(model=torch.nn.Identity(), spec=spec))
        assert out.inputs.shape == batch.inputs.shape and torch.equal(out.targets, batch.targets)
        assert not torch.equal(out.inputs, batch.inputs)
        assert 0 <= float(out.inputs.min()) <= float(out.inputs.max()) <= 1
        assert policy.describe()["backend"] == backend


@pytest.mark.parametrize("policy", ["cifar10", "imagenet", "svhn"])
def test_autoaugment_follows_torchvision_s_sub_policies(policy, monkeypatch):
    ours = create_policy("autoaugment", policy=policy)
    theirs = v2.AutoAugment(v2.AutoAugmentPolicy[policy.upper()])
    assert [tuple(map(tuple, sub)) for sub in ours.sub_policies] == [tuple(map(tuple, sub)) for sub in theirs._policies]
    space = batched.autoaugment_space(SIZE)
    assert list(space) == list(theirs._AUGMENTATION_SPACE)
    for name, (make, signed) in theirs._AUGMENTATION_SPACE.items():
        expected = make(10, *SIZE)
        values, our_signed = space[name]
        assert our_signed == signed and (torch.equal(values, expected) if expected is not None else values.ndim == 0)
    # the first step's op frequencies: sub-policies uniform, each step applied with its probability
    seen = []
    monkeypatch.setattr(batched, "apply_named_ops", lambda images, names, values: seen.append(names) or images)
    count = 20_000
    batched.autoaugment(torch.zeros(count, 1, 1, 1), ours.sub_policies, torch.Generator().manual_seed(0))
    expected: dict[str, float] = {}
    for (name, probability, _), _second in ours.sub_policies:
        expected[name] = expected.get(name, 0.0) + probability / len(ours.sub_policies)
    expected["Identity"] = 1.0 - sum(expected.values())
    observed = torch.tensor([seen[0].count(name) for name in expected], dtype=torch.float64)
    assert observed.sum() == count
    assert chi_square(observed, torch.tensor(list(expected.values()), dtype=torch.float64) * count) < \
        chi_square_bound(len(expected) - 1)
