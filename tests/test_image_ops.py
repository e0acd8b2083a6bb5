"""Batched per-sample MetaAugment ops equal torchvision's single-image ops."""
import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from metaaugment.adaaug.head import HEAD_OPS
from metaaugment.sample_aware.ops import ALL_OPS, MAGNITUDE_FREE, OPS, apply_ops, apply_transformations, op_parameter


def torchvision_single(name, image, value):
    """The call torchvision's AutoAugment/RandAugment makes for one image (image (C, H, W))."""
    if name == "Identity":
        return image
    if name == "AutoContrast":
        return TF.autocontrast(image)
    if name == "Equalize":
        return TF.equalize(image)
    if name == "Rotate":
        return TF.rotate(image, angle=value)
    if name in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(value)), 0.0] if name == "ShearX" else [0.0, math.degrees(math.atan(value))]
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        translate = [int(value), 0] if name == "TranslateX" else [0, int(value)]
        return TF.affine(image, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0])
    if name == "Brightness":
        return TF.adjust_brightness(image, value)
    if name == "Color":
        return TF.adjust_saturation(image, value)
    if name == "Contrast":
        return TF.adjust_contrast(image, value)
    if name == "Sharpness":
        return TF.adjust_sharpness(image, value)
    if name == "Posterize":
        return TF.posterize(image, int(value))
    if name == "Solarize":
        return TF.solarize(image, value)
    if name == "Invert":
        return TF.invert(image)
    if name == "Rotate180":
        return TF.rotate(image, angle=180.0)
    if name == "Flip":
        return TF.horizontal_flip(image)
    raise AssertionError(name)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", sorted(set(ALL_OPS) | set(HEAD_OPS)))
def test_each_batched_op_equals_torchvision_on_every_sample(name, channels):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(12, channels, 16, 20, generator=g) * 255).round() / 255  # uint8-representable
    magnitudes = torch.rand(12, generator=g) * 10
    signs = torch.where(torch.rand(12, generator=g) < 0.5, -1.0, 1.0)
    pool = tuple(sorted(set(ALL_OPS) | set(HEAD_OPS)))
    ops = torch.full((12,), pool.index(name))
    out = apply_ops(images, ops, magnitudes, signs, pool)
    for i in range(12):
        value = op_parameter(name, magnitudes[i].item(), signs[i].item(), (16, 20))
        expected = torchvision_single(name, images[i], value)
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0, msg=f"{name} sample {i}")


def test_equalize_equals_torchvision_on_flat_and_low_contrast_images():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 17, 23, generator=g)
    images[0] = 0.5  # one level: nothing to equalize, returned as is
    images[1, 0] = 1.0
    images[1, 0, 0, 0] = 0.2  # all but one pixel at the brightest level: step 0 too
    images[2] = images[2] * 0.1 + 0.45  # a narrow range, stretched
    images[3] = (images[3] * 4).floor() / 4  # four levels
    out = apply_ops(images, torch.full((6,), OPS.index("Equalize")), torch.zeros(6), torch.ones(6))
    for i in range(6):
        assert torch.equal(out[i], TF.equalize(images[i])), f"sample {i}"


def test_mixed_ops_in_one_batch_and_input_untouched():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(28, 3, 12, 12, generator=g)
    before = images.clone()
    ops = torch.arange(28) % len(OPS)
    magnitudes = torch.rand(28, generator=g) * 10
    signs = torch.ones(28)
    out = apply_ops(images, ops, magnitudes, signs)
    assert torch.equal(images, before)
    for i in range(28):
        single = apply_ops(images[i:i + 1], ops[i:i + 1], magnitudes[i:i + 1], signs[i:i + 1])
        torch.testing.assert_close(out[i:i + 1], single)
    identity = ops == OPS.index("Identity")
    assert torch.equal(out[identity], images[identity])


def test_magnitude_ranges_follow_randaugment():
    assert op_parameter("Rotate", 10, -1, (32, 32)) == -30.0
    assert op_parameter("ShearX", 5, 1, (32, 32)) == pytest.approx(0.15)
    assert op_parameter("TranslateX", 10, 1, (32, 331)) == 150.0
    assert op_parameter("Brightness", 10, 1, (32, 32)) == pytest.approx(1.9)
    assert op_parameter("Posterize", 0, 1, (8, 8)) == 8 and op_parameter("Posterize", 10, 1, (8, 8)) == 4
    assert op_parameter("Solarize", 10, 1, (8, 8)) == 0.0
    assert all(op_parameter(n, 7, 1, (8, 8)) == 0.0 for n in MAGNITUDE_FREE)


def test_a_transformation_applies_its_two_ops_in_order():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 10, 10, generator=g)
    pairs = torch.tensor([[OPS.index("Brightness"), OPS.index("Solarize")]] * 4)
    mags = torch.full((4, 2), 6.0)
    signs = torch.ones(4, 2)
    out = apply_transformations(images, pairs, mags, signs)
    step = apply_ops(images, pairs[:, 0], mags[:, 0], signs[:, 0])
    torch.testing.assert_close(out, apply_ops(step, pairs[:, 1], mags[:, 1], signs[:, 1]))
    second_first = apply_ops(images, pairs[:, 1], mags[:, 1], signs[:, 1])
    reversed_order = apply_ops(second_first, pairs[:, 0], mags[:, 0], signs[:, 0])
    assert not torch.allclose(out, reversed_order)


@pytest.mark.parametrize("size", [(31, 17), (32, 32)])
def test_geometric_ops_sample_the_very_pixels_torchvision_samples(size):
    """Nearest-neighbour sampling amplifies one-ulp differences of the grid into whole-pixel
    moves; the grid is computed in torchvision's order, so every sample is bit-identical."""
    g = torch.Generator().manual_seed(5)
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        images = (torch.rand(200, 3, *size, generator=g) * 255).round() / 255
        magnitudes = torch.rand(200, generator=g) * 10
        signs = torch.where(torch.rand(200, generator=g) < 0.5, -1.0, 1.0)
        out = apply_ops(images, torch.full((200,), OPS.index(name)), magnitudes, signs)
        for i in range(200):
            value = op_parameter(name, magnitudes[i].item(), signs[i].item(), size)
            assert torch.equal(out[i], torchvision_single(name, images[i], value)), f"{name} sample {i}"


def test_the_image_ops_use_only_public_torchvision_functions():
    import ast
    from pathlib import Path

    import metaaugment.imageops.ops as ops

    tree = ast.parse(Path(ops.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchvision"):
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            assert not any(alias.name.startswith("_") for alias in node.names), node.module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "TF":
            assert not node.attr.startswith("_"), node.attr
