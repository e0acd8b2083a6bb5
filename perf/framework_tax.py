"""Our meta-iteration against a bare learn2learn loop: what the framework costs beyond it.

    python perf/framework_tax.py                  # glyphs, 5-way 1-shot, conv4, the benchmark's defaults
    python perf/framework_tax.py --repeats 21

For MAML and ProtoNets: the run loop's training step (`Trainer._step`: the policy's
`augment_task`, the learner's `train_step` with its pre- and post-update metrics, the
outer Adam step) against a loop written here with learn2learn and torch alone (clone,
adapt, query loss, backward, Adam), on the same model (copied), the same meta-batch of
tasks and the same settings, timed alternately in one process (`timing.round_robin`).
The ratio is ours / bare; the target is at most 1.10.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import round_robin

from metaaugment.infra.dependencies import learn2learn
from metaaugment.learners.episodic import embed, prototype_logits
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory
from metaaugment.run.host_memory import keep_freed_host_memory
from metaaugment.run.loop import Trainer


def bare_maml(model: torch.nn.Module, inner_lr: float, inner_steps: int, meta_lr: float):
    maml = learn2learn().algorithms.MAML(model, lr=inner_lr)
    optimizer = torch.optim.Adam(maml.parameters(), lr=meta_lr)

    def step(episodes) -> None:
        optimizer.zero_grad()
        for episode in episodes:
            learner = maml.clone()
            for _ in range(inner_steps):
                learner.adapt(F.cross_entropy(learner(episode.support_inputs), episode.support_targets))
            loss = F.cross_entropy(learner(episode.query_inputs), episode.query_targets)
            (loss / len(episodes)).backward()
        optimizer.step()

    return step


def bare_protonet(model: torch.nn.Module, meta_lr: float, ways: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=meta_lr)

    def step(episodes) -> None:
        optimizer.zero_grad()
        for episode in episodes:
            logits = prototype_logits(embed(model, episode.support_inputs), episode.support_targets,
                                      embed(model, episode.query_inputs), ways)
            (F.cross_entropy(logits, episode.query_targets) / len(episodes)).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="glyphs")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    keep_freed_host_memory()  # as `metaaug` does
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        for learner in ("maml", "protonet"):
            config = RunConfig(benchmark=args.benchmark, learner=learner, device="cpu").resolve()
            trainer = Trainer(config, RunDirectory(Path(folder) / learner), show_progress=False)
            episodes = next(iter(trainer.strategy.epoch_inputs(0, 0)))
            options = config.learner_options
            model = copy.deepcopy(trainer.model)
            if learner == "maml":
                bare = bare_maml(model, options.get("inner_lr", 0.4), options.get("inner_steps", 1),
                                 options.get("meta_lr", 1e-3))
            else:
                bare = bare_protonet(model, options.get("meta_lr", 1e-3), config.ways)
            medians = round_robin({"ours": lambda: trainer._step(episodes), "bare": lambda: bare(episodes)},
                                  torch.device("cpu"), args.repeats)
            print(f"{learner:9s} {config.ways}-way {config.shots}-shot, {len(episodes)} tasks per meta-batch, "
                  f"{config.model}: ours {1e3 * medians['ours']:.1f} ms, bare learn2learn/torch loop "
                  f"{1e3 * medians['bare']:.1f} ms, ratio {medians['ours'] / medians['bare']:.2f}")


if __name__ == "__main__":
    main()
