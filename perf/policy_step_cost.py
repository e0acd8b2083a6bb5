"""Cost of each registered policy per training step, as a ratio to a plain step.

Measured in one process, on the same model and the same batch, so the ratios hold across
machines even where absolute times do not. Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/policy_step_cost.py [--image-size 32] [--batch-size 128] [--device auto]
"""
from __future__ import annotations

import torch
from timing import random_batch, round_robin, step_arguments

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy, supervised_step
from metaaugment.registry import POLICIES


def make_stepper(policy_name: str, spec: TaskSpec, batch: Batch, device: torch.device, model_name: str):
    """A closure running one supervised_step (augment + forward + backward + update)."""
    torch.manual_seed(0)
    model = create_model(model_name, spec).to(device)
    policy = create_policy(policy_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # policies that learn from validation data (MetaAugment) get the training batch as a stand-in
    ctx = StepContext(model=model, spec=spec, optimizer=optimizer, validation_batch=lambda: batch,
                      batch_size=len(batch), steps_per_epoch=100, epochs=1,
                      evaluate=lambda fraction: {"accuracy": 0.0, "loss": 0.0})
    policy.setup(ctx)
    policy.to(device)
    return lambda: supervised_step(model, optimizer, batch, policy, ctx)


def main() -> None:
    args = step_arguments(__doc__.splitlines()[0], repeats=15)
    device, spec, batch = random_batch(args)
    names = [n for n in POLICIES.names() if "classification" in POLICIES.get(n).factory.benchmark_kinds]
    steppers = {name: make_stepper(name, spec, batch, device, args.model) for name in names}
    median = round_robin(steppers, device, args.repeats)
    print(f"{'policy':16s} {'ms/step':>9s} {'ratio to none':>14s}")
    for name in names:
        print(f"{name:16s} {1e3 * median[name]:9.1f} {median[name] / median['none']:14.2f}")


if __name__ == "__main__":
    main()
