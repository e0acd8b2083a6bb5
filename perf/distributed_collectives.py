"""Collectives per training step of each policy family on N processes: how many, and how many bytes.

    python perf/distributed_collectives.py                 # starts 2 gloo processes on CPU
    python perf/distributed_collectives.py --nproc 4

It starts itself under torch.distributed's launcher, builds each family's run with the
library (digits or glyphs; the model and batch size of the benchmark unless given), runs
`--warmup` steps, then counts every all_reduce / broadcast / all_gather / all_to_all the
next `--steps` steps make, with the bytes each leaves on a rank (an all_gather's output, an
all_to_all's received rows), and prints one row per family (rank 0). The count is
a property of the code, not of the machine: it is what a GPU run makes too.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

FAMILIES = {
    "none (plain SGD)": dict(benchmark="digits", policy="none"),
    "randaugment": dict(benchmark="digits", policy="randaugment"),
    "mixup": dict(benchmark="digits", policy="mixup"),
    "metaaugment (fast)": dict(benchmark="digits", policy="metaaugment"),
    "metaaugment (higher)": dict(benchmark="digits", policy="metaaugment", policy_options={"engine": "higher"}),
    "metaaugment (last-layer)": dict(benchmark="digits", policy="metaaugment",
                                     policy_options={"engine": "last-layer"}),
    "rl-mixup": dict(benchmark="digits", policy="rl-mixup"),
    "maml + intershuffle": dict(benchmark="glyphs", policy="intershuffle", batch_size=4),
}


def count_collectives(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from metaaugment.run.config import RunConfig
    from metaaugment.run.folder import RunDirectory
    from metaaugment.run.loop import Trainer

    counts: Counter = Counter()
    sizes: Counter = Counter()
    for name in ("all_reduce", "broadcast", "all_gather", "broadcast_object_list", "all_to_all_single"):
        original = getattr(dist, name)

        def counting(*a, _original=original, _name=name, **k):
            tensors = a[0] if isinstance(a[0], list) else [a[0]]
            counts[_name] += 1
            sizes[_name] += sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
            return _original(*a, **k)

        setattr(dist, name, counting)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, options in FAMILIES.items():
            config = RunConfig(**{"device": "cpu", "epochs": 1, "batch_size": args.batch_size, **options}).resolve()
            trainer = Trainer(config, RunDirectory(Path(folder) / label), show_progress=False)
            inputs = trainer.strategy.epoch_inputs(0, 0)
            for _ in range(args.warmup):
                trainer._step(next(inputs))
            counts.clear()
            sizes.clear()
            for _ in range(args.steps):
                trainer._step(next(inputs))
            per_step = {k: (counts[k] / args.steps, sizes[k] / args.steps) for k in counts}
            parameters = sum(p.numel() for p in trainer.model.parameters())
            rows.append((label, config.batch_size, parameters, per_step))
            comm = trainer.comm
    if comm.is_main:
        print(f"collectives per training step on {comm.world_size} processes (gloo), "
              f"mean over {args.steps} steps after {args.warmup}")
        print(f"{'family':26} {'batch':>5} {'model params':>12} {'collectives':>11} {'MB':>8}  kinds")
        for label, batch, parameters, per_step in rows:
            total = sum(c for c, _ in per_step.values())
            megabytes = sum(b for _, b in per_step.values()) / 1e6
            kinds = ", ".join(f"{k} {c:g} ({b / 1e3:.1f} kB)" for k, (c, b) in sorted(per_step.items()))
            print(f"{label:26} {batch:>5} {parameters:>12,} {total:>11g} {megabytes:>8.3f}  {kinds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        count_collectives(args)
        return
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={args.nproc}", __file__, *sys.argv[1:]]))


if __name__ == "__main__":
    main()
