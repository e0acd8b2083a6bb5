"""The cost of a MAML meta-iteration through learn2learn's inner loop and through higher's.

One meta-iteration: for each task of a meta-batch, adapt conv4 on the support set with
`inner_steps` SGD steps and backpropagate the query loss (second or first order); then the
outer Adam step. Time: the backends are timed in one process, round-robin (median ms per
meta-iteration). Memory, three ways:
- saved: the bytes autograd keeps for the backward pass of one task's adaptation and query
  loss (counted with saved-tensor hooks, each storage once; tasks are backpropagated one by
  one, so this is the graph's share of the peak): deterministic, the same on every device;
- peak: each backend alone in a fresh subprocess; on CUDA torch.cuda.max_memory_allocated, on
  CPU the peak resident memory above what the process held after its first meta-iteration
  (the allocator's caching makes this one noisy, +-20 MiB on our CPU);
- growth: resident memory after the last meta-iteration minus after the 2nd (higher was
  reported to grow memory inside loops, its issue #6); near 0 means none.
Ratios are to learn2learn measured in the same run.

    python perf/inner_loop_cost.py                          # omniglot-sized: 28x28, 5-way 1-shot
    python perf/inner_loop_cost.py --image-size 84 --hidden 32 --meta-batch 2 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import round_robin  # noqa: E402

from metaaugment import Episode, StepContext, TaskSpec, create_learner, create_model, create_policy  # noqa: E402
from metaaugment.run.devices import resolve_device  # noqa: E402

BACKENDS = {  # name -> learner options
    "learn2learn": {"inner_loop": "learn2learn"},
    "higher sgd": {"inner_loop": "higher", "inner_optimizer": "sgd"},
    "higher momentum": {"inner_loop": "higher", "inner_optimizer": "momentum"},
    "higher adam": {"inner_loop": "higher", "inner_optimizer": "adam"},
}


def make_step(args: argparse.Namespace, backend: str, steps: int, first_order: bool):
    """A closure running one meta-iteration of MAML with `backend`'s inner loop."""
    device = resolve_device(args.device)
    torch.manual_seed(0)
    spec = TaskSpec(num_classes=args.ways, input_shape=(args.channels, args.image_size, args.image_size))
    model = create_model("conv4", spec, hidden_size=args.hidden).to(device)
    learner = create_learner("maml", inner_lr=0.01, inner_steps=steps, first_order=first_order, **BACKENDS[backend])
    learner.setup(model, spec, 1000)
    g = torch.Generator().manual_seed(1)

    def task() -> Episode:
        labels = torch.arange(args.ways)
        return Episode(torch.rand(args.ways * args.shots, *spec.input_shape, generator=g).to(device),
                       labels.repeat_interleave(args.shots).to(device),
                       torch.rand(args.ways * args.query, *spec.input_shape, generator=g).to(device),
                       labels.repeat_interleave(args.query).to(device))

    batch = [task() for _ in range(args.meta_batch)]
    ctx = StepContext(model=model, spec=spec, task_generator=torch.Generator())
    policy = create_policy("none")
    step = lambda: learner.train_step(model, batch, policy, ctx)  # noqa: E731
    step.one_task = lambda: learner.score_task(model, batch[0], training=True)  # type: ignore[attr-defined]
    return step, device


def saved_for_backward_mib(step) -> float:
    """MiB of tensors autograd saves for backward during one call of `step` (all alive until
    it returns, so no storage is reused meanwhile), each storage counted once."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values()) / 2**20


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def measure_memory(args: argparse.Namespace, backend: str, steps: int, first_order: bool) -> dict:
    """Run in a fresh process (see main): peak and growth of memory over `repeats` meta-iterations."""
    step, device = make_step(args, backend, steps, first_order)
    step()  # the first iteration allocates the optimizer's state
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = resident_mib()
    second = None
    for i in range(args.repeats):
        step()
        if i == 0:
            second = resident_mib()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"peak_mib": peak, "growth_mib": resident_mib() - second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--inner-steps", default="1,5")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: one subprocess's measure
    args = parser.parse_args()
    if args.memory_of:
        backend, steps, order = json.loads(args.memory_of)
        print(json.dumps(measure_memory(args, backend, steps, order == "first")))
        return

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, conv4 hidden {args.hidden}, "
          f"{args.ways}-way {args.shots}-shot {args.query} queries, {args.image_size}x{args.image_size}, "
          f"meta-batch {args.meta_batch}")
    backends = args.backends.split(",")
    print(f"{'inner loop':<17} {'steps':>5} {'order':>6} {'ms/iter':>9} {'ratio':>6} {'saved MiB':>10} {'ratio':>6} "
          f"{'peak MiB':>9} {'ratio':>6} {'growth MiB':>11}")
    for steps in (int(s) for s in args.inner_steps.split(",")):
        for order in ("second", "first"):
            steppers = {b: make_step(args, b, steps, order == "first")[0] for b in backends}
            times = {b: 1000 * t for b, t in round_robin(steppers, device, args.repeats, warmup=2).items()}
            saved = {b: saved_for_backward_mib(step.one_task) for b, step in steppers.items()}
            memory = {}
            for backend in backends:
                command = [sys.executable, __file__, *sys.argv[1:], "--memory-of", json.dumps([backend, steps, order])]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                memory[backend] = json.loads(out.strip().splitlines()[-1])
            base_time, base_peak = times[backends[0]], memory[backends[0]]["peak_mib"]
            for backend in backends:
                peak = memory[backend]["peak_mib"]
                print(f"{backend:<17} {steps:>5} {order:>6} {times[backend]:>9.1f} {times[backend] / base_time:>6.2f} "
                      f"{saved[backend]:>10.1f} {saved[backend] / saved[backends[0]]:>6.2f} "
                      f"{peak:>9.1f} {peak / base_peak if base_peak > 0 else float('nan'):>6.2f} "
                      f"{memory[backend]['growth_mib']:>11.1f}")


if __name__ == "__main__":
    main()
