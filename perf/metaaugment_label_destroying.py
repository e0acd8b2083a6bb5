"""Does MetaAugment learn to down-weight a label-destroying transformation? (paper, Fig. 3)

Trains MetaAugment on `digits` (or `--benchmark fonts`) with Rotate180 added to the op
pool (a 6 becomes a 9, and most digits and letters become no character at all), then
compares the policy network's mean output for op pairs that contain Rotate180 with pairs
made of label-preserving ops only, over the sampler's last window, and the sampler's
probability of drawing Rotate180. Exits non-zero
when Rotate180 does not get the lower mean weight. Run by hand:

    .venv/bin/python perf/metaaugment_label_destroying.py [--benchmark fonts] [--epochs 30] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from metaaugment.registry import POLICIES, parse_options
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train


def mean_outputs_by_group(policy_state: dict, pool: list[str], op: str) -> tuple[float, float, float]:
    """(mean output of pairs containing `op`, mean output of the other pairs, sampler share of `op`)."""
    sums = policy_state["sampler.output_sums"].sum(0)
    counts = policy_state["sampler.output_counts"].sum(0)
    index = pool.index(op)
    with_op = torch.zeros_like(counts, dtype=torch.bool)
    with_op[index, :] = True
    with_op[:, index] = True
    probabilities = policy_state["sampler.probabilities"]
    share = float(probabilities[index, :].sum() + probabilities[:, index].sum() - probabilities[index, index])
    return (float(sums[with_op].sum() / counts[with_op].sum()), float(sums[~with_op].sum() / counts[~with_op].sum()),
            share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="digits")
    parser.add_argument("--epochs", type=int, default=None, help="default: the benchmark's")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a MetaAugment option (repeatable), e.g. --set meta_every=4")
    args = parser.parse_args()
    options = parse_options(POLICIES.get("metaaugment").factory, args.set)
    out = args.out or Path(tempfile.mkdtemp(prefix="metaaug-rot180-"))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = RunConfig(benchmark=args.benchmark, policy="metaaugment",
                           policy_options={**options, "extra_ops": ("Rotate180",)}, epochs=args.epochs, seed=seed,
                           device="cpu")
        results = train(config, out / f"seed{seed}", resume=True, show_progress=False)
        state = torch.load(out / f"seed{seed}" / "checkpoint.pt", weights_only=True)["policy"]
        with_rot, without, share = mean_outputs_by_group(state, results["policy"]["pool"], "Rotate180")
        rows.append((seed, with_rot, without, share, results["metrics"]["test_accuracy"]))
    uniform_share = (2 * 15 - 1) / 15**2
    print(f"{args.benchmark}, MetaAugment with Rotate180 in the pool of 15 ops, {results['metrics']['epochs']} "
          f"epochs; runs in {out}")
    print(f"{'seed':>4s} {'mean P, pairs with Rotate180':>29s} {'mean P, other pairs':>20s} "
          f"{'P(draw Rotate180)':>18s} {'test acc':>9s}")
    for seed, with_rot, without, share, acc in rows:
        print(f"{seed:4d} {with_rot:29.4f} {without:20.4f} {share:12.3f} (uniform {uniform_share:.3f}) "
              f"{100 * acc:8.2f}%")
    lower = all(with_rot < without for _, with_rot, without, _, _ in rows)
    print("Rotate180 pairs get the lower mean weight in every seed:", "yes" if lower else "NO")
    sys.exit(0 if lower else 1)


if __name__ == "__main__":
    main()
