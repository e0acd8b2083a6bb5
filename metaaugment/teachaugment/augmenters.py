"""TeachAugment's augmenter networks (Sec. 4 of the paper): a colour augmenter (a per-pixel
and per-channel scale and shift) and a geometric augmenter (one affine matrix per image),
both conditioned on the label (the "context") and driven by a noise vector.

Everything random is an argument (`AugmenterDraws`, drawn for the global batch by the
policy): the noise, the dropout masks and the relaxed Bernoulli's uniforms. The batch
normalization of the augmenters uses the statistics of the global batch through the run's
communicator (`parallel.sync_batchnorm.global_batch_statistics`), so rows split over ranks
are augmented as one process augments them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaaugment.batch import Params, per_sample
from metaaugment.parallel.comm import Communicator
from metaaugment.parallel.sync_batchnorm import global_batch_statistics
from metaaugment.teachaugment.ops import affine_transform, colour_transform, masked_dropout, relaxed_bernoulli

SLOPE = 0.2  # LeakyReLU's negative slope, and the gain of the He initialization


@dataclass
class AugmenterDraws(Params):
    """Every random number the augmenters use for B rows (one global batch).

    noise: (B, noise_dim) standard normal; colour_keep / geometry_keep: (B, 2, 4 noise_dim)
    bool dropout masks of the two hidden layers of each noise encoder; pixel_keep: (B, 2,
    hidden) bool channel-dropout masks of the colour augmenter's per-pixel body;
    colour_apply / geometry_apply: (B,) uniforms in (0, 1) of the relaxed Bernoulli that
    decides how much of each augmentation is applied; augmenter: (B,) int64, which augmenter
    transforms the row (0 .. n-1: the replay buffer's, oldest first; n: the current one);
    projections: (C, P) directions of the colour regularization's sliced Wasserstein distance
    (shared by the batch)."""

    noise: Tensor = per_sample()
    colour_keep: Tensor = per_sample()
    geometry_keep: Tensor = per_sample()
    pixel_keep: Tensor = per_sample()
    colour_apply: Tensor = per_sample()
    geometry_apply: Tensor = per_sample()
    augmenter: Tensor = per_sample()
    projections: Tensor | None = None


def draw_augmenter_inputs(rows: int, channels: int, noise_dim: int, hidden: int, dropout: float,
                          projections: int, generator: torch.Generator | None = None) -> AugmenterDraws:
    """The draws for `rows` rows from `generator` (None: torch's global generator, the same
    on every rank); every row uses the current augmenter."""
    width = 4 * noise_dim

    def keep(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator) >= dropout

    def uniform() -> Tensor:
        return torch.rand(rows, generator=generator).clamp(1e-6, 1 - 1e-6)

    return AugmenterDraws(noise=torch.randn(rows, noise_dim, generator=generator),
                          colour_keep=keep(rows, 2, width), geometry_keep=keep(rows, 2, width),
                          pixel_keep=keep(rows, 2, hidden), colour_apply=uniform(), geometry_apply=uniform(),
                          augmenter=torch.zeros(rows, dtype=torch.int64),
                          projections=torch.randn(channels, projections, generator=generator))


class GlobalNorm(nn.Module):
    """Batch normalization with the global batch's statistics and no running statistics (as
    the augmenters always normalize by the batch), with a learned scale and shift:
    (B, F) or (B, F, H, W) -> the same shape."""

    def __init__(self, features: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, values: Tensor, comm: Communicator) -> Tensor:
        mean, var, _ = global_batch_statistics(values, comm)
        shape = [1, -1] + [1] * (values.dim() - 2)
        normalized = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return normalized * self.weight.view(shape) + self.bias.view(shape)


class NoiseEncoder(nn.Module):
    """(B, inputs) -> (B, outputs): two hidden layers of `width` (linear, global batch
    normalization, LeakyReLU, dropout by the given masks), then a linear output layer
    initialized to zero (the augmenters start as the identity)."""

    def __init__(self, inputs: int, width: int, outputs: int, dropout: float):
        super().__init__()
        self.first, self.first_norm = nn.Linear(inputs, width, bias=False), GlobalNorm(width)
        self.second, self.second_norm = nn.Linear(width, width, bias=False), GlobalNorm(width)
        self.out = nn.Linear(width, outputs, bias=False)
        self.dropout = dropout

    def forward(self, inputs: Tensor, keep: Tensor, comm: Communicator) -> Tensor:
        hidden = F.leaky_relu(self.first_norm(self.first(inputs), comm), SLOPE)
        hidden = masked_dropout(hidden, keep[:, 0], self.dropout)
        hidden = F.leaky_relu(self.second_norm(self.second(hidden), comm), SLOPE)
        return self.out(masked_dropout(hidden, keep[:, 1], self.dropout))


def initialize(module: nn.Module, zero: tuple[nn.Module, ...]) -> None:
    """He-normal weights (LeakyReLU gain, fan-out) for every linear and convolution layer,
    the layers in `zero` set to zero."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(layer.weight, SLOPE, "fan_out")
    for layer in zero:
        nn.init.zeros_(layer.weight)


class ColourAugmenter(nn.Module):
    """Per-pixel colour augmentation (the paper's Eq. 9): (B, C, H, W) images, labels and
    draws -> scale and shift (B, C, H, W), each the sigmoid of a global term (from the noise
    and the label) plus a per-pixel term (1x1 convolutions of the pixel and the label),
    mapped to scale in 1 +- magnitude / 2 and shift in +-1/2, and mixed with the identity by
    a relaxed Bernoulli of a learned logit per class."""

    def __init__(self, channels: int, classes: int, noise_dim: int, hidden: int, magnitude: float, dropout: float):
        super().__init__()
        self.noise = NoiseEncoder(noise_dim + classes, 4 * noise_dim, 2, dropout)
        self.pixel_in = nn.Conv2d(channels, hidden, 1, bias=False)
        self.context_in = nn.Conv2d(classes, hidden, 1, bias=False)
        self.first_norm, self.pixel_hidden = GlobalNorm(hidden), nn.Conv2d(hidden, hidden, 1, bias=False)
        self.second_norm, self.pixel_out = GlobalNorm(hidden), nn.Conv2d(hidden, 2 * channels, 1, bias=False)
        self.logits = nn.Parameter(torch.zeros(classes))
        self.magnitude, self.dropout = magnitude, dropout
        initialize(self, zero=(self.noise.out, self.pixel_out))

    def forward(self, images: Tensor, labels: Tensor, draws: AugmenterDraws, comm: Communicator,
                temperature: float) -> tuple[Tensor, Tensor]:
        onehot = F.one_hot(labels, self.logits.numel()).to(images.dtype)
        overall = self.noise(torch.cat([onehot, draws.noise], 1), draws.colour_keep, comm).view(-1, 2, 1, 1)
        pixels = self.pixel_in(images) + self.context_in(onehot[:, :, None, None])
        pixels = masked_dropout(F.leaky_relu(self.first_norm(pixels, comm), SLOPE), draws.pixel_keep[:, 0],
                                self.dropout)
        pixels = self.pixel_hidden(pixels)
        pixels = masked_dropout(F.leaky_relu(self.second_norm(pixels, comm), SLOPE), draws.pixel_keep[:, 1],
                                self.dropout)
        scale, shift = self.pixel_out(pixels).chunk(2, dim=1)
        scale = self.magnitude * (torch.sigmoid(overall[:, :1] + scale) - 0.5) + 1
        shift = torch.sigmoid(overall[:, 1:] + shift) - 0.5
        applied = relaxed_bernoulli(self.logits[labels], draws.colour_apply, temperature).view(-1, 1, 1, 1)
        return 1 - applied + applied * scale, applied * shift


class GeometricAugmenter(nn.Module):
    """A global affine transformation per image (the paper's Eq. 10): labels and draws ->
    (B, 2, 3) matrices, the identity plus magnitude * (sigmoid(noise encoder) - 1/2), mixed
    with the identity by a relaxed Bernoulli of a learned logit per class."""

    def __init__(self, classes: int, noise_dim: int, magnitude: float, dropout: float):
        super().__init__()
        self.noise = NoiseEncoder(noise_dim + classes, 4 * noise_dim, 6, dropout)
        self.logits = nn.Parameter(torch.zeros(classes))
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).unsqueeze(0))
        self.magnitude = magnitude
        initialize(self, zero=(self.noise.out,))

    def forward(self, labels: Tensor, draws: AugmenterDraws, comm: Communicator, temperature: float) -> Tensor:
        onehot = F.one_hot(labels, self.logits.numel()).to(draws.noise.dtype)
        raw = self.noise(torch.cat([onehot, draws.noise], 1), draws.geometry_keep, comm).view(-1, 2, 3)
        matrix = self.magnitude * (torch.sigmoid(raw) - 0.5) + self.identity
        applied = relaxed_bernoulli(self.logits[labels], draws.geometry_apply, temperature).view(-1, 1, 1)
        return (1 - applied) * self.identity + applied * matrix


class Augmenter(nn.Module):
    """Both augmenters, colour then geometry: (B, C, H, W) images in [0, 1], (B,) labels and
    their draws -> (augmented, coloured): the augmented images, and the colour-augmented ones
    before the geometric transformation (what the colour regularization compares)."""

    def __init__(self, channels: int, classes: int, *, noise_dim: int, hidden: int, colour_magnitude: float,
                 geometry_magnitude: float, dropout: float, temperature: float):
        super().__init__()
        self.colour = ColourAugmenter(channels, classes, noise_dim, hidden, colour_magnitude, dropout)
        self.geometry = GeometricAugmenter(classes, noise_dim, geometry_magnitude, dropout)
        self.temperature = temperature

    def forward(self, images: Tensor, labels: Tensor, draws: AugmenterDraws, comm: Communicator
                ) -> tuple[Tensor, Tensor]:
        scale, shift = self.colour(images, labels, draws, comm, self.temperature)
        coloured = colour_transform(images, scale, shift)
        return affine_transform(coloured, self.geometry(labels, draws, comm, self.temperature)), coloured
