"""CPU training steps with glibc's default allocator settings against `keep_freed_host_memory`.

The setting is process-wide and cannot be undone, so each measurement runs in a fresh
subprocess; the two settings alternate, round after round, so that slow drifts of the
machine hit both alike. Reported: median ms per step and minor page faults per step, for a
plain SGD step and a MetaAugment step (fast engine), and the speed-up of kept memory.

Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/host_memory.py [--model small-cnn] [--batch-size 128] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(model_name: str, batch_size: int, steps: int, keep: bool) -> dict[str, list[float]]:
    """In this process: ms and page faults of `steps` plain and MetaAugment steps, interleaved."""
    import torch
    from metaaugment_cost import training_steppers

    from metaaugment import Batch, TaskSpec, keep_freed_host_memory

    if keep and not keep_freed_host_memory():
        raise SystemExit("glibc's mallopt is not available here")
    spec = TaskSpec(num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(batch_size, 3, 32, 32, generator=g), torch.randint(0, 10, (batch_size,), generator=g))
    val = Batch(torch.rand(batch_size, 3, 32, 32, generator=g), torch.randint(0, 10, (batch_size,), generator=g))
    steppers = training_steppers(spec, batch, val, torch.device("cpu"), model_name, None, ["fast"])
    out: dict[str, list[float]] = {}
    for index in range(steps + 2):  # two warm-up rounds
        for name, step in steppers.items():
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            seconds = time.perf_counter() - start
            if index >= 2:
                out.setdefault(f"{name} ms", []).append(1e3 * seconds)
                out.setdefault(f"{name} faults", []).append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per subprocess")
    parser.add_argument("--rounds", type=int, default=3, help="subprocesses per setting, alternating")
    parser.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.batch_size, args.steps, keep=args.child == "kept")))
        return
    results: dict[str, dict[str, list[float]]] = {"default": {}, "kept": {}}
    for _ in range(args.rounds):
        for setting in results:
            command = [sys.executable, __file__, "--child", setting, "--model", args.model,
                       "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
            child = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            for key, values in child.items():
                results[setting].setdefault(key, []).extend(values)
    print(f"CPU, model {args.model}, batch {args.batch_size} x 3x32x32, {args.rounds} x {args.steps} steps per setting")
    print(f"\n{'step':24s} {'glibc defaults':>22s} {'kept for reuse':>22s} {'speed-up':>9s}")
    for step in ("plain SGD step", "metaaugment engine=fast"):
        ms = {s: statistics.median(results[s][f"{step} ms"]) for s in results}
        faults = {s: statistics.median(results[s][f"{step} faults"]) for s in results}
        cells = [f"{ms[s]:8.1f} ms {faults[s]:7.0f} pf" for s in results]
        print(f"{step:24s} {cells[0]:>22s} {cells[1]:>22s} {ms['default'] / ms['kept']:8.2f}x")
    for setting in results:
        ratio = statistics.median(results[setting]["metaaugment engine=fast ms"]) / statistics.median(
            results[setting]["plain SGD step ms"])
        print(f"MetaAugment / plain with {setting} settings: {ratio:.2f}x")


if __name__ == "__main__":
    main()
