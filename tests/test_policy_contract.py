"""Every registered policy honours its contract (docs/policy-interface.md): the batch contract
for batch policies, the task contract for task policies, and a state round trip after which
the restored policy steps exactly as the original does."""
import copy
import dataclasses
import io

import numpy as np
import pytest
import torch

from metaaugment import Batch, BatchPolicy, Episode, StepContext, StepResult, TaskPolicy, TaskSpec, create_model
from metaaugment.batch import Tasks
from metaaugment.data.episodes import EpisodeSampler, FewShotSplit
from metaaugment.learners import forward_pass
from metaaugment.parallel import SINGLE_PROCESS
from metaaugment.parallel.lockstep import LockstepRanks
from metaaugment.parallel.sync_batchnorm import synchronize_batchnorm
from metaaugment.registry import POLICIES, create_policy

SPEC = TaskSpec(num_classes=5, input_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
BATCH = 8
BATCH_POLICIES = [n for n in POLICIES.names() if issubclass(POLICIES.get(n).factory, BatchPolicy)]
TASK_POLICIES = [n for n in POLICIES.names() if issubclass(POLICIES.get(n).factory, TaskPolicy)]


def make_batch(size: int = BATCH, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(size, 3, 16, 16, generator=g), torch.randint(0, 5, (size,), generator=g))


def make_context(comm=SINGLE_PROCESS) -> StepContext:
    """A context with every service a policy may ask for (model with features, optimizer,
    validation batches and subsets, the run's length and batch size); on the ranks of `comm`,
    its BatchNorm over the global batch, as the run loop converts it."""
    torch.manual_seed(0)
    model = synchronize_batchnorm(create_model("small-cnn", SPEC, width=4), torch.device("cpu"), comm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return StepContext(model=model, spec=SPEC, optimizer=optimizer, validation_batch=lambda: make_batch(6, seed=1),
                       steps_per_epoch=10, epochs=3, batch_size=BATCH,
                       evaluate=lambda fraction: {"accuracy": 0.5, "loss": 1.0},
                       task_generator=torch.Generator().manual_seed(0), comm=comm)


def set_up(name: str, ctx: StepContext):
    policy = create_policy(name)
    policy.setup(ctx)
    return policy


def test_every_policy_is_a_batch_or_a_task_policy():
    assert set(BATCH_POLICIES) | set(TASK_POLICIES) == set(POLICIES.names())
    assert "none" in BATCH_POLICIES and "none" in TASK_POLICIES  # applies to every benchmark kind


# -- the batch contract -----------------------------------------------------------------------
@pytest.mark.parametrize("name", BATCH_POLICIES)
def test_a_built_in_batch_policy_draws_through_the_template_and_its_params_are_typed(name):
    """No built-in overrides `augment` (the global-draw / take-rows idiom lives in BatchPolicy
    once); what a policy draws reaches its later hooks as a Params dataclass, whose per-sample
    fields have one entry per row."""
    import dataclasses

    from metaaugment import Params

    cls = POLICIES.get(name).factory
    assert all("augment" not in vars(k) for k in cls.__mro__ if k is not BatchPolicy and issubclass(k, BatchPolicy))
    ctx = make_context()
    policy = set_up(name, ctx)
    out = policy.augment(make_batch(), ctx)
    assert out.params is None or isinstance(out.params, Params)
    if out.params is not None:
        for f in dataclasses.fields(out.params):
            value = getattr(out.params, f.name)
            if f.metadata.get("per_sample") and value is not None:
                assert len(value) == len(out), f.name


@pytest.mark.parametrize("name", BATCH_POLICIES)
def test_augment_contract(name):
    ctx = make_context()
    policy = set_up(name, ctx)
    batch = make_batch()
    before = (batch.inputs.clone(), batch.targets.clone())
    out = policy.augment(batch, ctx)
    assert isinstance(out, Batch) and len(out) % len(batch) == 0  # copies > 1 may repeat samples
    assert out.inputs.shape[1:] == batch.inputs.shape[1:] and out.inputs.dtype == batch.inputs.dtype
    assert 0.0 <= out.inputs.min().item() and out.inputs.max().item() <= 1.0
    if out.targets.dim() == 1:
        assert out.targets.dtype == torch.int64
    else:
        assert out.targets.shape == (len(out), SPEC.num_classes)
        torch.testing.assert_close(out.targets.sum(1), torch.ones(len(out)))
    # the caller's tensors are never modified in place
    assert torch.equal(batch.inputs, before[0]) and torch.equal(batch.targets, before[1])


SHARED = [*BATCH_POLICIES, "randaugment:backend=torchvision", "cutout:backend=torchvision",
          "metaaugment:copies=2,flip=true,cutout=4"]


@pytest.mark.parametrize("variant", SHARED)
def test_on_two_ranks_a_policy_augments_its_rows_as_one_process_augments_them(variant):
    """Every batch policy draws its randomness for the global batch and applies it to a rank's
    rows (Batch.share): two ranks' outputs (parallel.lockstep), put in their places, are the
    one-process output. What a row needs from another rank's rows (MixUp's previous row,
    RL-Mixup's partners and saliency maps) comes through ctx.comm."""
    name, _, text = variant.partition(":")
    options = dict(item.split("=") for item in text.split(",") if item)
    options = {key: {"true": True}.get(value, int(value) if value.isdigit() else value)
               for key, value in options.items()}
    # the saliency policies read a model with BatchNorm, and TeachAugment's augmenters normalize
    # by the global batch: statistics summed over ranks round differently from one process's,
    # which moves the outputs by about 1e-7
    assert_two_ranks_augment_as_one(lambda: create_policy(name, **options),
                                    exact=name not in ("saliency-mixup", "rl-mixup", "teachaugment"))


def assert_two_ranks_augment_as_one(make_policy, exact: bool = True) -> None:
    batch = make_batch()

    def augment(comm):
        ctx = make_context(comm)
        policy = make_policy()
        policy.setup(ctx)
        torch.manual_seed(7)  # the same draws on every rank, as the run loop's seeding gives
        return policy.augment(batch.rows(comm.local_rows(len(batch))) if comm.distributed else batch, ctx)

    one = augment(SINGLE_PROCESS)
    parts = LockstepRanks(2).run(augment)
    inputs, targets = torch.empty_like(one.inputs), torch.empty_like(one.targets)
    for part in parts:
        assert part.global_size == len(one) and len(part) == len(one) // 2  # each rank did half the rows
        inputs[part.share.index], targets[part.share.index] = part.inputs, part.targets
    torch.testing.assert_close(inputs, one.inputs, rtol=0 if exact else 1e-4, atol=0 if exact else 1e-5)
    torch.testing.assert_close(targets, one.targets, rtol=0 if exact else 1e-4, atol=0 if exact else 1e-5)


@pytest.mark.parametrize("name", BATCH_POLICIES)
def test_loss_weights_contract(name):
    ctx = make_context()
    policy = set_up(name, ctx)
    batch = policy.augment(make_batch(), ctx)
    weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
    assert weights is None or (weights.shape == (len(batch),) and (weights >= 0).all())


def batch_steps(policy: BatchPolicy, ctx: StepContext, first: int, count: int) -> list:
    """`count` policy steps (augment, forward, weights, feedback) from step `first`, each with
    its own fixed seed, then the end of the epoch; everything the policy returned."""
    outputs = []
    for step in range(first, first + count):
        ctx.step = ctx.step_in_epoch = step
        torch.manual_seed(100 + step)
        batch = policy.augment(make_batch(seed=step), ctx)
        output = forward_pass(ctx.model, batch)
        weights = policy.loss_weights(batch, output, ctx)
        detached = type(output)(output.logits.detach(), output.losses.detach(), None)
        metrics = policy.after_step(StepResult(batch, detached, weights, 0.0), ctx)
        outputs.append((batch.inputs, batch.targets, weights, metrics))
    outputs.append(policy.on_epoch_end(ctx))
    return outputs


def same(a, b) -> bool:
    """Deep equality of state values and step outputs (tensors, arrays, dicts, lists)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):  # e.g. a rollout buffer
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (Batch, Episode)):
        return type(a) is type(b) and same(vars(a), vars(b))
    return a == b


def round_trip(policy, name: str, ctx: StepContext):
    """A fresh, set-up instance loaded from `policy`'s state_dict, through bytes as in a checkpoint."""
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(12345)  # the fresh instance's own initial weights differ from the original's
    fresh = set_up(name, ctx)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.parametrize("name", BATCH_POLICIES)
def test_a_restored_batch_policy_steps_exactly_as_the_original(name):
    ctx = make_context()
    policy = set_up(name, ctx)
    batch_steps(policy, ctx, 0, 4)  # learned state exists: optimizer moments, agent buffer, counts
    fresh = round_trip(policy, name, ctx)
    assert same(policy.state_dict(), fresh.state_dict())
    # both from the same task network: the test's forward passes move its BatchNorm statistics,
    # which a policy reading features in evaluation mode (MADAug) sees, as a resumed run does
    model_state = copy.deepcopy(ctx.model.state_dict())
    original_steps = batch_steps(policy, ctx, 4, 3)
    ctx.model.load_state_dict(model_state)
    restored_steps = batch_steps(fresh, ctx, 4, 3)
    assert same(original_steps, restored_steps)
    assert same(policy.state_dict(), fresh.state_dict())


def test_a_lost_optimizer_state_would_be_caught():
    """The round trip above detects lost state: MetaAugment without its Adam moments steps differently."""
    ctx = make_context()
    policy = set_up("metaaugment", ctx)
    batch_steps(policy, ctx, 0, 4)
    fresh = round_trip(policy, "metaaugment", ctx)
    fresh.optimizer.state.clear()
    assert not same(batch_steps(policy, ctx, 4, 2), batch_steps(fresh, ctx, 4, 2))


# -- the task contract ------------------------------------------------------------------------
def few_shot_split(classes: int = 12, per_class: int = 6) -> FewShotSplit:
    """Images whose first pixel is their index, so an episode tells which samples it holds."""
    n = classes * per_class
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return FewShotSplit(images, torch.arange(classes).repeat_interleave(per_class))


def regression_episode() -> Episode:
    g = torch.Generator().manual_seed(0)
    return Episode(torch.rand(5, 1, generator=g), torch.rand(5, 1, generator=g), torch.rand(7, 1, generator=g),
                   torch.rand(7, 1, generator=g))


def sample_task_policy_episodes(policy: TaskPolicy, seed: int) -> list[Episode]:
    """Two augmented few-shot episodes and one augmented regression episode, as the policy's
    benchmark kinds call for, with the task sampler and the generator seeded by `seed`."""
    import random

    generator = torch.Generator().manual_seed(seed)
    episodes = []
    if "few-shot" in policy.benchmark_kinds:
        split = few_shot_split()
        transforms = policy.task_transforms(split.class_index(), 3, 2 + 2)
        sampler = EpisodeSampler(split, 3, 2, 2, transforms)
        random.seed(seed)
        episodes += [policy.augment_task(sampler.sample(), generator) for _ in range(2)]
    if "regression" in policy.benchmark_kinds:
        episodes.append(policy.augment_task(regression_episode(), generator))
    return episodes


@pytest.mark.parametrize("name", TASK_POLICIES)
def test_task_contract(name):
    ctx = make_context()
    policy = set_up(name, ctx)
    assert set(policy.benchmark_kinds) <= {"few-shot", "regression", "classification"}
    for episode in sample_task_policy_episodes(policy, seed=3):
        if episode.support_targets.dtype == torch.int64:  # few-shot classification: 3-way 2-shot, 2 queries
            assert episode.support_inputs.shape == (6, 1, 4, 4) and episode.query_inputs.shape == (6, 1, 4, 4)
            assert set(episode.support_targets.tolist()) == set(range(3))
            assert sorted(episode.query_targets.tolist()) == sorted(episode.support_targets.tolist())
            support, query = episode.info["support_indices"], episode.info["query_indices"]
            assert not set(support.tolist()) & set(query.tolist())
    reference = regression_episode()
    before = [t.clone() for t in (reference.support_targets, reference.query_targets)]
    out = policy.augment_task(reference, torch.Generator().manual_seed(0))
    assert out.support_targets.shape == reference.support_targets.shape
    assert out.query_targets.shape == reference.query_targets.shape
    assert torch.equal(reference.support_targets, before[0]) and torch.equal(reference.query_targets, before[1])
    # one key per task, from the generator only: the same generator state gives the same task
    again = policy.augment_task(reference, torch.Generator().manual_seed(0))
    assert torch.equal(out.support_targets, again.support_targets)


@pytest.mark.parametrize("name", TASK_POLICIES)
def test_a_restored_task_policy_builds_and_augments_tasks_as_the_original(name):
    ctx = make_context()
    policy = set_up(name, ctx)
    sample_task_policy_episodes(policy, seed=1)
    fresh = round_trip(policy, name, ctx)
    assert same(sample_task_policy_episodes(policy, seed=2), sample_task_policy_episodes(fresh, seed=2))


def meta_batch(policy: TaskPolicy, seed: int) -> list[Episode]:
    """Three tasks of one kind the policy applies to: 3-way 2-shot few-shot episodes with two
    queries per class, else regression episodes."""
    import random

    if "few-shot" not in policy.benchmark_kinds:
        return [regression_episode() for _ in range(3)]
    split = few_shot_split()
    sampler = EpisodeSampler(split, 3, 2, 2, policy.task_transforms(split.class_index(), 3, 2 + 2))
    random.seed(seed)
    return [sampler.sample() for _ in range(3)]


@pytest.mark.parametrize("name", TASK_POLICIES)
def test_task_contract_on_the_meta_batch(name):
    """`augment_tasks` keeps the tasks' places and target shapes, draws from the keys alone,
    leaves the caller's tensors alone, and two ranks holding the tasks round-robin get what
    one process gets for their tasks."""
    ctx = make_context()
    policy = set_up(name, ctx)
    episodes = meta_batch(policy, seed=4)
    before = [[t.clone() for t in (e.support_inputs, e.support_targets, e.query_inputs, e.query_targets)]
              for e in episodes]
    keys = [11, 22, 33]
    out = policy.augment_tasks(Tasks(episodes, range(3), 3), keys, ctx)
    assert out.index == [0, 1, 2] and out.total == 3
    for episode, task, original in zip(episodes, out, before):
        assert task.support_targets.shape == episode.support_targets.shape
        assert task.query_targets.shape == episode.query_targets.shape
        rows = 2 if task.mix is not None else 1  # a hidden-layer interpolation holds both tasks' rows
        assert len(task.support_inputs) == rows * len(task.support_targets)
        assert same([episode.support_inputs, episode.support_targets, episode.query_inputs, episode.query_targets],
                    original)
    assert same(out, policy.augment_tasks(Tasks(episodes, range(3), 3), keys, ctx))

    def on_rank(comm):
        held = comm.local_items(range(3))
        rank_ctx = dataclasses.replace(ctx, comm=comm)
        return policy.augment_tasks(Tasks([episodes[i] for i in held], held, 3), keys, rank_ctx)

    ranks = LockstepRanks(2).run(on_rank)
    assert same([ranks[0][0], ranks[1][0], ranks[0][1]], [out[0], out[1], out[2]])


def test_declared_metadata():
    for name in POLICIES.names():
        factory = POLICIES.get(name).factory
        assert factory.name == name, "registry name and policy.name must agree (config.json records it)"
        assert factory.benchmark_kinds, f"{name} must say which benchmark kinds it applies to"
        assert POLICIES.get(name).summary, "every policy needs a one-line summary for `metaaug list`"


def test_the_documented_example_policy_works():
    """docs/policy-interface.md's 'Writing and registering a policy' runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "policy-interface.md").read_text()
    code = re.search(r"## Writing and registering a policy.*?```python\n(.*?)```", doc, re.S).group(1)
    with POLICIES.scoped():  # the example's registration ends with the test
        exec(compile(code, "policy-interface.md", "exec"), {})
        policy = create_policy("gaussian-noise", sigma=0.1)
    assert "gaussian-noise" not in POLICIES
    ctx = make_context()
    policy.setup(ctx)
    batch = make_batch(64)
    out = policy.augment(batch, ctx)
    noise = (out.inputs - batch.inputs)[(batch.inputs > 0.3) & (batch.inputs < 0.7)]
    assert abs(noise.std().item() - 0.1) < 0.01
    assert_two_ranks_augment_as_one(lambda: type(policy)(sigma=0.1))  # as the doc says
