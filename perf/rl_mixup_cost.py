"""RL-Mixup's cost, measured in one process on the same model and batch (the paper's §5.2).

Timed round-robin (medians):
- a plain SGD step (no augmentation);
- a saliency-mixup step (saliency pass + patch mixup at random q: RL-Mixup without the agent);
- an RL-Mixup step (the same plus the agent acting and recording the step);
- the agent alone: acting on the batch's saliency maps and recording the step.
Measured once:
- a PPO update on a full rollout buffer (two episodes, the paper's 1,000 steps). On a CPU
  the full 20-epoch update takes minutes, so `--measured-ppo-epochs` epochs are timed and
  scaled to the configured 20 (every PPO epoch does the same work: a pass over the buffer
  in minibatches of 100; no early stop is configured);
- the reward's validation pass: 10% of a 10,000-image validation split, every 50 steps.
The PPO update and the reward pass are amortized over the steps they serve.

Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/rl_mixup_cost.py                    # PreActResNet-18, 100 x 3x32x32, p = 16
    .venv/bin/python benchmarks/rl_mixup_cost.py --model small-cnn  # a cheap task network: the worst case
"""
from __future__ import annotations

import argparse
import time

import torch
from timing import round_robin, timed

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy, supervised_step
from metaaugment.rl_mixup.agent import PercentileAgent
from metaaugment.rl_mixup.saliency import input_saliency, patch_saliency
from metaaugment.run.devices import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="preact-resnet18")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--steps-per-epoch", type=int, default=500, help="CIFAR-100 at batch 100")
    parser.add_argument("--validation-images", type=int, default=10_000)
    parser.add_argument("--measured-ppo-epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    spec = TaskSpec(num_classes=args.classes, input_shape=(3, args.image_size, args.image_size),
                    mean=(0.5,) * 3, std=(0.25,) * 3)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(args.batch_size, *spec.input_shape, generator=g),
                  torch.randint(0, args.classes, (args.batch_size,), generator=g)).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, model {args.model}, "
          f"batch {args.batch_size}x{spec.input_shape}, patches {args.patches}")

    def stepper(policy_name: str, **options):
        torch.manual_seed(0)
        model = create_model(args.model, spec).to(device)
        policy = create_policy(policy_name, **options)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        # the reward's validation pass is timed on its own below: here it never comes due
        ctx = StepContext(model=model, spec=spec, optimizer=optimizer, steps_per_epoch=args.steps_per_epoch,
                          epochs=300, batch_size=args.batch_size,
                          evaluate=lambda fraction: {"accuracy": 0.0, "loss": 0.0})
        policy.setup(ctx)
        return model, policy, ctx, lambda: supervised_step(model, optimizer, batch, policy, ctx)

    _, _, _, plain = stepper("none")
    _, _, _, control = stepper("saliency-mixup", patches=args.patches)
    model, rl_policy, rl_ctx, rl_step = stepper("rl-mixup", patches=args.patches, reward_every=10**9)
    rl_ctx.step_in_epoch = 1  # mid-episode: record() never starts or fills an episode here
    saliency = patch_saliency(input_saliency(model, batch.inputs, batch.targets, rl_ctx.loss_fn), args.patches)
    agent = rl_policy.agent

    def act_and_record() -> None:
        agent.act(saliency)
        agent.record(0.0, episode_start=False)

    steps = {"plain SGD step": plain, "saliency-mixup step (random q)": control, "RL-Mixup step": rl_step,
             "agent: act + record": act_and_record}
    medians = round_robin(steps, device, args.repeats, warmup=2)

    # a PPO update on a full buffer of two episodes
    torch.manual_seed(0)
    buffer_steps = 2 * args.steps_per_epoch
    measured = PercentileAgent(args.batch_size, args.patches, buffer_steps, n_epochs=args.measured_ppo_epochs,
                               device=device)
    for step in range(buffer_steps):
        measured.act(saliency)
        measured.record(float(step % 50 == 49), episode_start=step % args.steps_per_epoch == 0)
    started = time.perf_counter()
    timed(measured.update, device)
    ppo_update = (time.perf_counter() - started) * 20 / args.measured_ppo_epochs

    # the reward: accuracy on 10% of the validation split, every 50 steps
    val_images = torch.rand(args.validation_images // 10, *spec.input_shape, generator=g).to(device)

    def reward_pass() -> None:
        model.eval()
        with torch.no_grad():
            for chunk in val_images.split(500):
                model(chunk)
        model.train()

    reward_pass()
    reward = timed(reward_pass, device)

    plain_s = medians["plain SGD step"]
    amortized_update = ppo_update / buffer_steps
    amortized_reward = reward / 50
    rl_total = medians["RL-Mixup step"] + amortized_update + amortized_reward
    agent_total = medians["agent: act + record"] + amortized_update
    print(f"\n{'timing':48s} {'ms':>10s} {'ratio to plain':>15s}")
    rows = [("plain SGD step", plain_s), ("saliency-mixup step (random q)", medians["saliency-mixup step (random q)"]),
            ("RL-Mixup step (agent acting included)", medians["RL-Mixup step"]),
            (f"PPO update, 20 epochs ({args.measured_ppo_epochs} timed), per step", amortized_update),
            ("reward validation pass (10%), per step", amortized_reward),
            ("RL-Mixup step, all amortized", rl_total)]
    for label, seconds in rows:
        print(f"{label:48s} {1e3 * seconds:10.2f} {seconds / plain_s:15.2f}")
    print(f"\nPPO update on {buffer_steps} steps (20 epochs): {ppo_update:.1f} s")
    print(f"agent share of the RL-Mixup step (acting {1e3 * medians['agent: act + record']:.2f} ms + "
          f"update {1e3 * amortized_update:.2f} ms): {100 * agent_total / rl_total:.1f}%")


if __name__ == "__main__":
    main()
