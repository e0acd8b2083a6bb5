"""MLTI (metaaugment.mlti): an interpolated task against the paper's definition on a hand-made
pair of tasks; hidden-layer interpolation inside MAML's and Meta-SGD's inner loop and
ProtoNets' embeddings against the explicit computation; the draws; the layers; the few-task
option of sinusoid-standard."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metaaugment import Episode, StepContext, TaskSpec, create_model
from metaaugment.batch import HiddenMix, Tasks
from metaaugment.infra.errors import UserError
from metaaugment.learners.episodic import prototype_logits
from metaaugment.mlti.interpolation import class_pairing, interpolate_tasks
from metaaugment.registry import BENCHMARKS, create_learner, create_policy

LAM = 0.3


def hand_made_pair() -> tuple[Episode, Episode]:
    """Two 2-way tasks, 2 support and 1 query sample per class, features (rows, 2) whose
    values name the sample: task i's class 0 is 'a', class 1 'b'; the partner's class 0 is
    'd', class 1 'c' (the partner lists its classes in another order)."""
    a0, b0, a1, b1, qa, qb = ([v, -v] for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    c0, c1, d0, d1, rc, rd = ([v, -v] for v in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0))
    task = Episode(torch.tensor([a0, b0, a1, b1]), torch.tensor([0, 1, 0, 1]),
                   torch.tensor([qb, qa]), torch.tensor([1, 0]))
    partner = Episode(torch.tensor([c0, c1, d0, d1]), torch.tensor([1, 1, 0, 0]),
                      torch.tensor([rd, rc]), torch.tensor([0, 1]))
    return task, partner


def mix(own: float, theirs: float) -> list[float]:
    value = LAM * own + (1 - LAM) * theirs
    return [value, -value]


def test_a_classification_pair_interpolates_class_by_class_into_new_classes():
    """Eq. 4 on a hand-made pair: with the pairing [1, 0], class 0 of the new task is 'a' with
    the partner's class 1 ('c'), class 1 is 'b' with 'd', k-th sample with k-th sample, in
    support and query alike; the labels are the new classes 0 and 1."""
    task, partner = hand_made_pair()
    new = interpolate_tasks(task, partner, LAM, label_sharing=False, permutation=[1, 0])
    expected_support = [mix(1, 10), mix(2, 30), mix(3, 20), mix(4, 40)]  # a0+c0, b0+d0, a1+c1, b1+d1
    torch.testing.assert_close(new.support_inputs, torch.tensor(expected_support))
    torch.testing.assert_close(new.query_inputs, torch.tensor([mix(6, 60), mix(5, 50)]))  # qb+rd, qa+rc
    assert new.support_targets.tolist() == [0, 1, 0, 1] and new.query_targets.tolist() == [1, 0]
    assert new.mix is None and new.info["class_pairing"] == [1, 0] and new.info["lam"] == LAM
    # the identity pairing pairs 'a' with 'd' instead
    other = interpolate_tasks(task, partner, LAM, label_sharing=False, permutation=[0, 1])
    torch.testing.assert_close(other.support_inputs[0], torch.tensor(mix(1, 30)))


def test_class_pairing_refuses_classes_of_other_sizes():
    with pytest.raises(ValueError, match="same number of samples per class"):
        class_pairing(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), [0, 1])


def test_a_regression_pair_interpolates_inputs_and_targets_row_by_row():
    """Eq. 3 (label-sharing): x and y of row r of both tasks, with the task's lambda."""
    g = torch.Generator().manual_seed(0)
    task, partner = (Episode(*(torch.rand(n, 1, generator=g) for n in (5, 5, 7, 7))) for _ in range(2))
    new = interpolate_tasks(task, partner, LAM, label_sharing=True)
    for name in ("support_inputs", "support_targets", "query_inputs", "query_targets"):
        torch.testing.assert_close(getattr(new, name), LAM * getattr(task, name) + (1 - LAM) * getattr(partner, name))


def test_a_hidden_layer_interpolation_stacks_both_tasks_rows():
    task, partner = hand_made_pair()
    new = interpolate_tasks(task, partner, LAM, label_sharing=False, permutation=[1, 0], layer="body.1")
    assert new.mix == HiddenMix("body.1", LAM)
    torch.testing.assert_close(new.support_inputs[:4], task.support_inputs)
    torch.testing.assert_close(new.support_inputs[4:], partner.support_inputs[torch.tensor([0, 2, 1, 3])])


# -- inside the learners ------------------------------------------------------------------------
SPEC = TaskSpec(num_classes=3, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,))
HEAD, TAIL = slice(0, 3), slice(3, 5)  # the network below split after its ReLU, module "2"


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3)).double()


def hidden_episode() -> Episode:
    """A 3-way task interpolated at the ReLU (module '2'): 2 support, 3 query samples per class,
    each inputs tensor holding the task's rows then the partner's."""
    g = torch.Generator().manual_seed(1)
    support, query = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(3)
    return Episode(torch.randn(12, 1, 4, 4, generator=g, dtype=torch.float64), support,
                   torch.randn(18, 1, 4, 4, generator=g, dtype=torch.float64), query, mix=HiddenMix("2", LAM))


def explicit(net: nn.Module, params: dict, inputs: torch.Tensor) -> torch.Tensor:
    """The interpolated forward written out: the head on both halves (BatchNorm over all the
    rows, as the hooked forward computes it), then lam * own + (1 - lam) * partner's, then the tail."""
    def part(layers: slice) -> dict:  # a slice of a Sequential keeps its modules' names
        return {k: v for k, v in params.items() if int(k.split(".")[0]) in range(5)[layers]}

    out = functional_call(net[HEAD], part(HEAD), (inputs,))
    rows = len(inputs) // 2
    return functional_call(net[TAIL], part(TAIL), (LAM * out[:rows] + (1 - LAM) * out[rows:],))


@pytest.mark.parametrize("name, loop", [("maml", "higher"), ("metasgd", "higher"), ("maml", "learn2learn")])
def test_maml_interpolates_the_support_with_its_initial_and_the_query_with_its_adapted_weights(name, loop):
    """Algorithm 1 of MLTI: the inner step on the interpolated support set (initial weights),
    then the loss of the interpolated query set through the adapted weights; the learner's
    hooked forward gives the explicit computation's loss and meta-gradients."""
    if loop == "learn2learn":
        pytest.importorskip("learn2learn")
    net, episode = network(), hidden_episode()
    learner = create_learner(name, inner_lr=0.3, inner_steps=1, inner_loop=loop)
    twin = copy.deepcopy(net)
    learner.setup(twin, SPEC, 10)
    loss, metrics = learner.score_task(twin, episode, training=True)
    grads = torch.autograd.grad(loss, list(twin.parameters()))

    params = dict(net.named_parameters())
    inner = nn.functional.cross_entropy(explicit(net, params, episode.support_inputs), episode.support_targets)
    steps = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    adapted = {k: v - 0.3 * g for (k, v), g in zip(params.items(), steps)}  # Meta-SGD's rates start at inner_lr
    expected = nn.functional.cross_entropy(explicit(net, adapted, episode.query_inputs), episode.query_targets)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-9)
    for got, want in zip(grads, torch.autograd.grad(expected, list(params.values()))):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    with torch.no_grad():  # the pre-update score is the interpolated query through the initial weights
        pre = nn.functional.cross_entropy(explicit(net, params, episode.query_inputs), episode.query_targets)
    assert metrics["pre_loss"] == pytest.approx(float(pre), rel=1e-9)


def test_protonets_embed_both_sets_through_the_interpolating_forward():
    """Algorithm 2: prototypes of the interpolated support embeddings, logits of the
    interpolated query embeddings."""
    net, episode = network(), hidden_episode()
    learner = create_learner("protonet")
    learner.setup(net, SPEC, 10)
    loss, _ = learner.score_task(net, episode, training=True)
    params = dict(net.named_parameters())
    logits = prototype_logits(explicit(net, params, episode.support_inputs), episode.support_targets,
                              explicit(net, params, episode.query_inputs), 3)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, episode.query_targets), rtol=1e-9, atol=1e-9)


def test_a_layer_the_forward_never_runs_is_one_line():
    net = network()
    learner = create_learner("protonet")
    learner.setup(net, SPEC, 10)
    net[0].extra = nn.ReLU()  # a module of the network that its forward does not call
    episode = hidden_episode().replace(mix=HiddenMix("0.extra", LAM))
    with pytest.raises(UserError, match="'0.extra' did not run"):
        learner.score_task(net, episode, training=True)


# -- the policy -----------------------------------------------------------------------------------
def set_up_mlti(spec: TaskSpec, model: nn.Module, **options):
    policy = create_policy("mlti", **options)
    policy.setup(StepContext(model=model, spec=spec))
    return policy


FEW_SHOT = TaskSpec(num_classes=5, input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,))
REGRESSION = TaskSpec(num_classes=None, input_shape=(1,), mean=(0.0,), std=(1.0,))


def test_default_layers_are_the_input_and_the_block_outputs():
    conv4 = set_up_mlti(FEW_SHOT, create_model("conv4", FEW_SHOT, hidden_size=4))
    assert conv4.describe()["interpolated_at"] == ["input", "body.0", "body.1", "body.2"]
    mlp = set_up_mlti(REGRESSION, create_model("mlp", REGRESSION))
    assert mlp.describe()["interpolated_at"] == ["input", "net.1", "net.3"]
    with pytest.raises(UserError, match="no layer 'body.9' to interpolate at; it has: standardize, body"):
        set_up_mlti(FEW_SHOT, create_model("conv4", FEW_SHOT, hidden_size=4), layers=("input", "body.9"))


def test_the_draws_follow_the_papers_distributions():
    """lambda ~ Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)); partners and
    layers uniform over the meta-batch and the layers; all from the task's key alone."""
    policy = set_up_mlti(REGRESSION, create_model("mlp", REGRESSION), alpha=0.5)
    draws = [policy.draw(key, 4) for key in range(4000)]
    lams = torch.tensor([d.lam for d in draws])
    assert lams.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lams.var().item() == pytest.approx(1 / (4 * 2), rel=0.08)
    assert torch.bincount(torch.tensor([d.partner for d in draws])).min() > 900  # ~1000 each
    layers = [d.layer for d in draws]
    assert all(abs(layers.count(name) - 4000 / 3) < 150 for name in (None, "net.1", "net.3"))
    again = policy.draw(7, 4)
    assert (again.partner, again.lam, again.layer) == (draws[7].partner, draws[7].lam, draws[7].layer)


def test_the_policy_pairs_each_task_with_the_partner_its_key_draws():
    policy = set_up_mlti(REGRESSION, create_model("mlp", REGRESSION), layers=("input",))
    g = torch.Generator().manual_seed(0)
    episodes = [Episode(*(torch.rand(n, 1, generator=g) for n in (5, 5, 7, 7))) for _ in range(4)]
    keys = [101, 202, 303, 404]
    out = policy.augment_tasks(Tasks(episodes, range(4), 4), keys, StepContext(model=nn.Linear(1, 1), spec=REGRESSION))
    for t, task in enumerate(out):
        draw = policy.draw(keys[t], 4)
        assert task.info["partner"] == draw.partner and task.info["lam"] == draw.lam
        expected = draw.lam * episodes[t].query_targets + (1 - draw.lam) * episodes[draw.partner].query_targets
        torch.testing.assert_close(task.query_targets, expected)


def test_sinusoid_standard_can_meta_train_on_a_few_fixed_tasks():
    """meta_train_tasks=N: the train split's tasks are N (A, phi) pairs, the same for every
    run; the other splits still draw afresh."""
    benchmark = BENCHMARKS.create("sinusoid-standard")
    family = benchmark.load(None, options=benchmark.options(meta_train_tasks=3))
    random.seed(0)
    pairs = {(e.info["amplitude"], e.info["phase"]) for e in (family.sample("train", 2, 2) for _ in range(60))}
    assert len(pairs) == 3 and pairs == set(benchmark.load(None, options=benchmark.options(meta_train_tasks=3))
                                            .train_tasks)
    assert len({family.sample("val", 2, 2).info["amplitude"] for _ in range(20)}) == 20
