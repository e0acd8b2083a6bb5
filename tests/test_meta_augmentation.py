"""Defining properties of the CE-increasing meta-augmentation policies (Rajendran et al. 2020)."""
import math
import random

import pytest
import torch

from metaaugment import Episode, create_policy
from metaaugment.data.episodes import EpisodeSampler, FewShotSplit, isolated_random, split_support_query
from metaaugment.task_augmentation.entropy import conditional_entropy_bits
from metaaugment.task_augmentation.label_noise import shift_targets, wrap_into
from metaaugment.task_augmentation.transforms import partition_classes

WAYS, SHOTS, QUERY = 3, 2, 3
CLASSES, PER_CLASS = 12, 6


@pytest.fixture
def split() -> FewShotSplit:
    """12 classes of 6 samples; every image is distinct."""
    n = CLASSES * PER_CLASS
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return FewShotSplit(images, torch.arange(CLASSES).repeat_interleave(PER_CLASS))


def sample_tasks(split, policy_name, count=200, seed=0):
    policy = create_policy(policy_name)
    transforms = policy.task_transforms(split.class_index(), WAYS, SHOTS + QUERY)
    sampler = EpisodeSampler(split, WAYS, SHOTS, QUERY, transforms)
    with isolated_random(seed):
        return policy, [sampler.sample() for _ in range(count)]


def labels_by_index(episodes):
    """dataset index -> set of task-local labels it received over all episodes."""
    seen: dict[int, set] = {}
    for e in episodes:
        for indices, labels in ((e.info["support_indices"], e.support_targets),
                                (e.info["query_indices"], e.query_targets)):
            for i, y in zip(indices.tolist(), labels.tolist()):
                seen.setdefault(i, set()).add(y)
    return seen


def classes_of(split, episode):
    indices = torch.cat([episode.info["support_indices"], episode.info["query_indices"]])
    return frozenset(split.labels[indices].tolist())


def test_episodes_have_n_way_k_shot_structure(split):
    _, episodes = sample_tasks(split, "intershuffle", count=20)
    for e in episodes:
        assert e.support_inputs.shape == (WAYS * SHOTS, 1, 2, 2) and e.query_inputs.shape == (WAYS * QUERY, 1, 2, 2)
        assert torch.bincount(e.support_targets).tolist() == [SHOTS] * WAYS
        assert torch.bincount(e.query_targets).tolist() == [QUERY] * WAYS
        # support and query never share a sample, and images are the ones the indices name
        assert not set(e.info["support_indices"].tolist()) & set(e.info["query_indices"].tolist())
        assert torch.equal((e.support_inputs * 255).round().flatten(1)[:, 0].long(), e.info["support_indices"])
        # one task-local label per dataset class
        for label in range(WAYS):
            members = e.info["support_indices"][e.support_targets == label]
            assert len(set(split.labels[members].tolist())) == 1


def test_nme_gives_an_image_the_same_label_in_every_task(split):
    policy, episodes = sample_tasks(split, "nme")
    assert all(len(labels) == 1 for labels in labels_by_index(episodes).values())
    groups = {frozenset(g) for g in policy.groups}
    assert {classes_of(split, e) for e in episodes} <= groups
    assert len(labels_by_index(episodes)) > 0.9 * CLASSES * PER_CLASS  # and tasks cover the data


def test_intrashuffle_keeps_fixed_groups_but_permutes_label_order(split):
    policy, episodes = sample_tasks(split, "intrashuffle")
    groups = {frozenset(g) for g in policy.groups}
    assert len(groups) == CLASSES // WAYS
    assert {classes_of(split, e) for e in episodes} == groups  # every task is exactly one fixed group
    several = [labels for labels in labels_by_index(episodes).values() if len(labels) > 1]
    assert len(several) > 0.9 * CLASSES * PER_CLASS * 0.9  # label order varies across tasks


def test_intershuffle_draws_classes_freely_and_relabels(split):
    _, episodes = sample_tasks(split, "intershuffle")
    class_sets = {classes_of(split, e) for e in episodes}
    assert len(class_sets) > CLASSES // WAYS * 5  # far more combinations than fixed groups
    counts = [len(labels) for labels in labels_by_index(episodes).values()]
    assert max(counts) == WAYS and sum(c >= 2 for c in counts) > 0.9 * len(counts)


@pytest.mark.parametrize("name", ["intershuffle", "intrashuffle", "nme"])
def test_our_task_sampling_builds_learn2learns_tasks_for_the_same_seed(split, name):
    """Where learn2learn is installed: its Taskset with its own NWays, KShots, LoadData,
    RemapLabels and ConsecutiveLabels (our fixed-group transforms kept: they are ours in both)
    draws the same tasks as our TaskSampler from the same `random` state."""
    l2l = pytest.importorskip("learn2learn")
    from metaaugment.data.task_sampling import TaskSampler

    ours = create_policy(name).task_transforms(split.class_index(), WAYS, SHOTS + QUERY)
    meta = l2l.data.MetaDataset(split, labels_to_indices=split.class_index().labels_to_indices)
    options = {"NWays": lambda t: {"n": t.n}, "KShots": lambda t: {"k": t.k}, "RemapLabels": lambda t: {
        "shuffle": t.shuffle}, "LoadData": lambda t: {}, "ConsecutiveLabels": lambda t: {}}
    theirs = [getattr(l2l.data.transforms, type(t).__name__)(meta, **options[type(t).__name__](t))
              if type(t).__name__ in options else t for t in ours]
    assert sum(t.__class__.__module__.startswith("learn2learn") for t in theirs) >= 3
    taskset = l2l.data.Taskset(meta, task_transforms=theirs, num_tasks=-1)
    sampler = TaskSampler(split.class_index(), ours)
    for seed in range(30):
        with isolated_random(seed):
            expected = taskset.sample()
        with isolated_random(seed):
            got = sampler.sample()
        for mine, reference in zip(got, expected, strict=True):
            assert torch.equal(mine, torch.as_tensor(reference))


def test_partition_is_fixed_and_disjoint():
    groups = partition_classes(range(10), 3, seed=0)
    assert groups == partition_classes(range(10), 3, seed=0)
    flat = [c for g in groups for c in g]
    assert len(groups) == 3 and all(len(g) == 3 for g in groups) and len(set(flat)) == 9


def regression_episode(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Episode(torch.rand(5, 1, generator=g), torch.randn(5, 1, generator=g),
                   torch.rand(7, 1, generator=g), torch.randn(7, 1, generator=g))


@pytest.mark.parametrize("name", ["target-noise", "discrete-noise"])
def test_noise_uses_one_epsilon_shared_by_support_and_query(name):
    policy = create_policy(name)
    generator = torch.Generator().manual_seed(0)
    epsilons = []
    for seed in range(50):
        e = regression_episode(seed)
        before = (e.support_targets.clone(), e.query_targets.clone())
        out = policy.augment_task(e, generator)
        shifts = torch.cat([out.support_targets - e.support_targets, out.query_targets - e.query_targets])
        torch.testing.assert_close(shifts, torch.full_like(shifts, shifts[0].item()))
        assert out.info["epsilon"] == pytest.approx(shifts[0].item(), abs=1e-6)
        assert torch.equal(e.support_targets, before[0]) and torch.equal(e.query_targets, before[1])
        epsilons.append(out.info["epsilon"])
    if name == "target-noise":
        assert all(-1 <= x <= 1 for x in epsilons) and max(epsilons) > 0.5 and min(epsilons) < -0.5
    else:
        assert {round(x, 6) for x in epsilons} == {0.0, 0.25, 0.5, 0.75}


def test_discrete_noise_raises_conditional_entropy_by_log2_of_its_values():
    """Theorem 1: with (eps, x, y) -> (x, y') one-to-one, H(Y'|X) = H(Y|X) + H(eps)."""
    policy = create_policy("discrete-noise")  # eps uniform on 4 values: H(eps) = 2 bits
    generator = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    xs, ys, noisy = [], [], []
    for _ in range(4000):
        # a task of the deterministic function y = x mod 3 on 20 discrete inputs (H(Y|X) = 0)
        x = torch.tensor([[float(rng.randrange(20))] for _ in range(4)])
        y = torch.remainder(x, 3.0)
        e = policy.augment_task(Episode(x[:2], y[:2], x[2:], y[2:]), generator)
        for xi, yi, ni in zip(torch.cat([e.support_inputs, e.query_inputs]).flatten().tolist(),
                              torch.cat([y[:2], y[2:]]).flatten().tolist(),
                              torch.cat([e.support_targets, e.query_targets]).flatten().tolist()):
            xs.append(xi), ys.append(yi), noisy.append(round(ni, 6))
    before, after = conditional_entropy_bits(xs, ys), conditional_entropy_bits(xs, noisy)
    assert before == 0.0
    assert after - before == pytest.approx(math.log2(4), abs=0.02)


def test_conditional_entropy_of_a_fair_coin_given_nothing_useful():
    assert conditional_entropy_bits([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert conditional_entropy_bits([0, 0, 1, 1], [5, 5, 6, 6]) == 0.0


def test_wrap_around_for_angular_targets():
    values = torch.tensor([9.5, 10.0, 12.5, -0.5])
    torch.testing.assert_close(wrap_into(values, 0.0, 10.0), torch.tensor([9.5, 0.0, 2.5, 9.5]))
    e = shift_targets(regression_episode(), 3.0, wrap=(0.0, 1.0))
    assert ((e.support_targets >= 0) & (e.support_targets < 1)).all()


def test_split_support_query_takes_the_first_shots_of_each_label():
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    order = torch.arange(6)
    s, s_y, q, q_y = split_support_query(order, labels, 1)
    assert s.tolist() == [1, 0] and s_y.tolist() == [0, 1]
    assert q.tolist() == [3, 5, 2, 4] and q_y.tolist() == [0, 0, 1, 1]


def test_policies_reject_the_wrong_kind_of_benchmark(tmp_path):
    from metaaugment.infra.errors import UserError
    from metaaugment.run.config import RunConfig
    from metaaugment.run.loop import train

    with pytest.raises(UserError, match="does not apply"):
        train(RunConfig(benchmark="sinusoid", policy="intershuffle", device="cpu"), tmp_path / "a")
    with pytest.raises(UserError, match="does not apply"):
        train(RunConfig(benchmark="sinusoid", policy="randaugment", device="cpu"), tmp_path / "b")
    with pytest.raises(UserError, match="few-shot"):
        train(RunConfig(benchmark="digits", policy="none", ways=5, device="cpu"), tmp_path / "c")
    assert not (tmp_path / "a").exists()
