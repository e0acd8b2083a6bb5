"""Image operations on whole batches, every sample with its own draw, shared by the policies.

- `ops`: per-sample ops by name and torchvision argument (`apply_named_ops`), one kernel per
  group of samples that share an op, equal to torchvision's single-image results;
- `table`: an op space as a lookup table of arguments, and per-sample draws from it
  (RandAugment, TrivialAugment);
- `flip`, `cutout`: random horizontal flips and Cutout squares per sample;
- `crop`: zero-padded random crops with flips (the CIFAR training pipeline).
"""
from metaaugment.imageops.crop import pad_crop_flip
from metaaugment.imageops.cutout import cutout
from metaaugment.imageops.flip import random_flip
from metaaugment.imageops.ops import MAGNITUDE_FREE, OP_NAMES, apply_named_ops
from metaaugment.imageops.table import OpTable, draw_ops, op_table

__all__ = ["MAGNITUDE_FREE", "OP_NAMES", "OpTable", "apply_named_ops", "cutout", "draw_ops", "op_table",
           "pad_crop_flip", "random_flip"]
