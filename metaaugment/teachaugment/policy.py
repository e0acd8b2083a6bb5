"""The `teachaugment` batch policy (Suzuki, CVPR 2022): an augmenter trained adversarially
against the target network, kept recognizable by an EMA teacher.

Per training step (the official code's main loop, read, not copied):
1. the teacher's weights move towards the target network's: teacher <- rate * teacher +
   (1 - rate) * target (an exponential moving average);
2. every `update_every` steps the augmenter learns, on this batch: it minimizes
   the adversarial loss (the non-saturating -log(1 - p_y) of the target network on the
   augmented images, label-smoothed: it makes the target wrong) + the teacher's
   cross-entropy on the same images (it must keep them recognizable) + `colour_weight` *
   the sliced Wasserstein distance between each image's colours and its colour-augmented
   version's; one AdamW step. The target network's BatchNorm statistics are not updated by
   this pass;
3. the batch is augmented (no gradient) for the target network's own step: each group of
   `group_size` rows by an augmenter drawn from the replay buffer (past augmenters, stored
   every `replay_every` epochs, priorities decaying by `replay_decay` per store) or the
   current one (priority 1).
Every random number (noise, dropout masks, the relaxed Bernoulli's uniforms, which augmenter
a group uses) is drawn for the global batch; the augmenters normalize by the global batch's
statistics; the augmenter's gradient is summed over ranks.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from metaaugment.batch import Batch, Params
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.parallel.comm import SINGLE_PROCESS
from metaaugment.policy import BatchPolicy, StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.steptools.precision import full_precision
from metaaugment.teachaugment.augmenters import Augmenter, AugmenterDraws, draw_augmenter_inputs
from metaaugment.teachaugment.figures import augmenter_progress
from metaaugment.teachaugment.ops import ema_update, non_saturating_loss, sliced_wasserstein

FIGURE_IMAGES = 8      # training images the figure follows through training
FIGURE_SEED = 0        # their draws: the same noise at every snapshot
TEMPERATURE = 0.05     # the relaxed Bernoulli's, as the official code's


class frozen_batchnorm_statistics:
    """Within the block, `model`'s BatchNorm layers normalize by the batch without updating
    their running statistics (the augmenter's pass must not count as a training batch)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]

    def __enter__(self) -> None:
        for layer in self.layers:
            layer.track_running_stats = False

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            layer.track_running_stats = True


@POLICIES.register("teachaugment")
class TeachAugment(BatchPolicy):
    """TeachAugment (Suzuki 2022): colour and affine augmenters that fool the target, bounded by an EMA teacher.

    Options:
        update_every: training steps per augmenter update (the paper's inner loop)
        ema_rate: the teacher's exponential moving average rate
        augmenter_lr: AdamW learning rate of the augmenters
        augmenter_weight_decay: AdamW weight decay of the augmenters
        colour_magnitude: colour scale range: scale in 1 +- colour_magnitude / 2
        geometry_magnitude: affine range: each matrix entry moves by up to geometry_magnitude / 2
        colour_weight: weight of the colour regularization (sliced Wasserstein distance)
        label_smoothing: label smoothing of the adversarial loss
        replay_every: epochs between stores of the augmenter in the replay buffer (0: no replay)
        replay_decay: priority decay of stored augmenters at each store
        group_size: rows per group that share an augmenter drawn from the replay buffer
        noise_dim: noise vector size (the hidden layers of the noise encoders are 4x)
        hidden: channels of the colour augmenter's per-pixel body
        dropout: dropout rate inside the augmenters (a source of randomness)
        projections: random directions of the sliced Wasserstein distance
    """

    relative_cost = 3.0  # measured on fonts: see docs/teachaugment.md

    def __init__(self, *, update_every: int = 5, ema_rate: float = 0.999, augmenter_lr: float = 1e-3,
                 augmenter_weight_decay: float = 1e-2, colour_magnitude: float = 0.8, geometry_magnitude: float = 0.5,
                 colour_weight: float = 10.0, label_smoothing: float = 0.1, replay_every: int = 10,
                 replay_decay: float = 0.9, group_size: int = 8, noise_dim: int = 128, hidden: int = 128,
                 dropout: float = 0.8, projections: int = 128):
        super().__init__()
        check_option(update_every >= 1, "update_every", update_every, "at least 1")
        check_option(representable(ema_rate) and 0 <= ema_rate < 1, "ema_rate", ema_rate, "in [0, 1)")
        for name, value in (("augmenter_lr", augmenter_lr), ("colour_magnitude", colour_magnitude),
                            ("geometry_magnitude", geometry_magnitude)):
            check_option(representable(value) and value > 0, name, value, "a positive number")
        check_option(representable(augmenter_weight_decay) and augmenter_weight_decay >= 0, "augmenter_weight_decay",
                     augmenter_weight_decay, "a non-negative number")
        check_option(representable(colour_weight) and colour_weight >= 0, "colour_weight", colour_weight,
                     "a non-negative number")
        check_option(representable(label_smoothing) and 0 <= label_smoothing < 1, "label_smoothing", label_smoothing,
                     "in [0, 1)")
        check_option(replay_every >= 0, "replay_every", replay_every, "0 (no replay) or more")
        check_option(representable(replay_decay) and 0 < replay_decay <= 1, "replay_decay", replay_decay, "in (0, 1]")
        for name, value in (("group_size", group_size), ("noise_dim", noise_dim), ("hidden", hidden),
                            ("projections", projections)):
            check_option(value >= 1, name, value, "at least 1")
        check_option(representable(dropout) and 0 <= dropout < 1, "dropout", dropout, "in [0, 1)")
        self.update_every, self.ema_rate = update_every, float(ema_rate)
        self.augmenter_lr, self.augmenter_weight_decay = float(augmenter_lr), float(augmenter_weight_decay)
        self.colour_magnitude, self.geometry_magnitude = float(colour_magnitude), float(geometry_magnitude)
        self.colour_weight, self.label_smoothing = float(colour_weight), float(label_smoothing)
        self.replay_every, self.replay_decay, self.group_size = replay_every, float(replay_decay), group_size
        self.noise_dim, self.hidden, self.dropout, self.projections = noise_dim, hidden, float(dropout), projections
        self.augmenter: Augmenter | None = None
        self.teacher: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.replay: list[dict[str, Tensor]] = []      # stored augmenters' states, oldest first
        self.priorities: list[float] = []
        self._scratch: list[Augmenter] = []            # runs a stored augmenter (not part of the state)
        self.figure_images: Tensor | None = None       # (8, C, H, W) uint8, with their labels
        self.figure_labels: Tensor | None = None
        self.snapshots: list[tuple[int, Tensor]] = []  # (epoch, (8, C, H, W) uint8) after each epoch
        self.last: dict[str, float] = {}

    # -- setup and state -------------------------------------------------------------------------
    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        spec = self.require_spec()
        if spec.num_classes is None or len(spec.input_shape) != 3:
            raise UserError("teachaugment needs an image classification benchmark")
        self.augmenter = self._new_augmenter().to(ctx.device)
        self._scratch = [self._new_augmenter().to(ctx.device)]
        # the teacher is the target network's copy (on many ranks it shares the communicator,
        # so its BatchNorm spans the global batch as the target's does)
        self.teacher = copy.deepcopy(ctx.model, memo={id(ctx.comm): ctx.comm})
        self.teacher.requires_grad_(False)
        self.teacher.train()
        self.optimizer = torch.optim.AdamW(self.augmenter.parameters(), lr=self.augmenter_lr,
                                           weight_decay=self.augmenter_weight_decay)

    def _new_augmenter(self) -> Augmenter:
        spec = self.require_spec()
        return Augmenter(spec.input_shape[0], spec.num_classes or 1, noise_dim=self.noise_dim, hidden=self.hidden,
                         colour_magnitude=self.colour_magnitude, geometry_magnitude=self.geometry_magnitude,
                         dropout=self.dropout, temperature=TEMPERATURE)

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "replay": self.replay, "priorities": self.priorities, "figure_images": self.figure_images,
                "figure_labels": self.figure_labels, "snapshot_epochs": [e for e, _ in self.snapshots],
                "snapshot_images": [images for _, images in self.snapshots]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.optimizer is None:
            raise RuntimeError("call TeachAugment.setup(ctx) before load_state_dict")
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.replay, self.priorities = list(state["replay"]), [float(p) for p in state["priorities"]]
        self.figure_images, self.figure_labels = state["figure_images"], state["figure_labels"]
        self.snapshots = list(zip(state["snapshot_epochs"], state["snapshot_images"]))

    # -- draws ------------------------------------------------------------------------------------
    def make_params(self, batch: Batch, ctx: StepContext) -> AugmenterDraws:
        """The augmenters' noise, dropout masks and uniforms for the global batch, and the
        augmenter of each group of `group_size` rows (by the replay buffer's priorities)."""
        count = batch.global_size
        draws = draw_augmenter_inputs(count, batch.inputs.shape[1], self.noise_dim, self.hidden, self.dropout,
                                      self.projections)
        if self.replay:
            priorities = torch.tensor([*self.priorities, 1.0])
            groups = -(-count // self.group_size)
            chosen = torch.multinomial(priorities, groups, replacement=True)
            draws.augmenter = chosen.repeat_interleave(self.group_size)[:count]
        else:
            draws.augmenter = torch.full((count,), len(self.replay), dtype=torch.int64)
        return draws

    # -- the step ---------------------------------------------------------------------------------
    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """The teacher's average, an augmenter update every `update_every` steps, then the batch
        augmented by the current or replayed augmenters."""
        assert isinstance(params, AugmenterDraws) and self.augmenter is not None and self.teacher is not None
        draws = _on(params, batch.inputs.device)
        labels = batch.hard_targets()
        ema_update(list(self.teacher.parameters()), list(ctx.model.parameters()), self.ema_rate)
        if self.figure_images is None and ctx.comm.is_main:  # the figure follows the first batch's first rows
            self.figure_images = (batch.inputs[:FIGURE_IMAGES] * 255).round().to(torch.uint8).cpu()
            self.figure_labels = labels[:FIGURE_IMAGES].cpu()
        if ctx.step % self.update_every == 0:
            self._learn(batch.inputs, labels, draws, batch.global_size, ctx)
        inputs = batch.inputs.clone()
        with torch.no_grad(), full_precision(ctx.device):
            for index, augmenter in self._augmenters():
                rows = (draws.augmenter == index).nonzero().flatten()
                if not len(rows) and not ctx.comm.distributed:  # on many ranks, every rank joins each pass
                    continue
                augmented, _ = augmenter(batch.inputs[rows].float(), labels[rows], draws.subset(rows), ctx.comm)
                inputs[rows] = augmented.to(inputs.dtype)
        return Batch(inputs, batch.targets, batch.weights, dict(batch.info), batch.share)

    def _augmenters(self) -> Iterator[tuple[int, Augmenter]]:
        """(index, augmenter) for the stored augmenters, oldest first, then the current one."""
        assert self.augmenter is not None
        for index, state in enumerate(self.replay):
            self._scratch[0].load_state_dict(state)
            yield index, self._scratch[0]
        yield len(self.replay), self.augmenter

    def _learn(self, images: Tensor, labels: Tensor, draws: AugmenterDraws, count: int, ctx: StepContext) -> None:
        """One AdamW step of the augmenter on this batch's rows (their share of the global mean)."""
        assert self.augmenter is not None and self.teacher is not None and self.optimizer is not None
        parameters = list(self.augmenter.parameters())
        with full_precision(ctx.device):
            augmented, coloured = self.augmenter(images.float(), labels, draws, ctx.comm)
            with frozen_batchnorm_statistics(ctx.model):
                target_logits = ctx.model(augmented)
            teacher_logits = self.teacher(augmented)
            adversarial = non_saturating_loss(target_logits.float(), labels, self.label_smoothing).sum() / count
            teacher = F.cross_entropy(teacher_logits.float(), labels, reduction="sum") / count
            colour = self.colour_weight * sliced_wasserstein(images.float(), coloured, draws.projections).sum() / count
            grads = torch.autograd.grad(adversarial + teacher + colour, parameters)
        for parameter, grad in zip(parameters, grads):
            parameter.grad = grad.detach().clone()
        ctx.comm.sum_gradients(parameters)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            sums = {"augmenter_adversarial_loss": float(adversarial), "augmenter_teacher_loss": float(teacher),
                    "augmenter_colour_regularization": float(colour),
                    "augmented_target_accuracy": float((target_logits.argmax(1) == labels).sum()) / count,
                    "augmented_teacher_accuracy": float((teacher_logits.argmax(1) == labels).sum()) / count}
        self.last = ctx.comm.sum_floats(sums)

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        metrics, self.last = self.last, {}
        return metrics

    def on_epoch_end(self, ctx: StepContext) -> dict[str, float]:
        """Store the augmenter in the replay buffer every `replay_every` epochs; snapshot what it
        does to the figure's images (rank 0)."""
        assert self.augmenter is not None
        if self.replay_every and (ctx.epoch + 1) % self.replay_every == 0:
            self.replay.append({k: v.detach().clone() for k, v in self.augmenter.state_dict().items()})
            self.priorities = [p * self.replay_decay for p in self.priorities] + [self.replay_decay]
        if self.figure_images is not None:
            self.snapshots.append((ctx.epoch + 1, self._figure_snapshot(ctx.device)))
        return {"replay_buffer": float(len(self.replay))}

    def _figure_snapshot(self, device: torch.device) -> Tensor:
        """The figure's images through the current augmenter, with the same draws every time."""
        assert self.augmenter is not None and self.figure_images is not None and self.figure_labels is not None
        images = self.figure_images.to(device).float() / 255
        draws = draw_augmenter_inputs(len(images), images.shape[1], self.noise_dim, self.hidden, self.dropout,
                                      self.projections, generator=torch.Generator().manual_seed(FIGURE_SEED))
        with torch.no_grad():
            augmented, _ = self.augmenter(images, self.figure_labels.to(device), _on(draws, device), SINGLE_PROCESS)
        return (augmented.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def write_artifacts(self, folder: Path) -> list[Path]:
        """augmenter_progress.png: the first training images, then what the augmenter made of
        them after each of (up to) eight epochs spread over the run."""
        if self.figure_images is None or not self.snapshots:
            return []
        path = Path(folder) / "augmenter_progress.png"
        augmenter_progress(self.figure_images, self.snapshots, path)
        return [path]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "replay_buffer": len(self.replay)}


def _on(draws: AugmenterDraws, device: torch.device) -> AugmenterDraws:
    """The draws with their tensors on `device`."""
    return AugmenterDraws(**{name: (value.to(device) if isinstance(value, Tensor) else value)
                             for name, value in vars(draws).items()})
