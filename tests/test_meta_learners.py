"""Meta-learners compute what their papers define; the episodic trainer resumes exactly."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaaugment import Episode, StepContext, TaskSpec, create_learner, create_policy
from metaaugment.learners.episodic import prototype_logits
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train
from metaaugment.steptools.stats import mean_and_ci95

SPEC = TaskSpec(num_classes=3, input_shape=(4,))


def episode(seed=0, ways=3, shots=2, query=4, dim=4):
    g = torch.Generator().manual_seed(seed)
    s_y = torch.arange(ways).repeat_interleave(shots)
    q_y = torch.arange(ways).repeat_interleave(query)
    return Episode(torch.randn(len(s_y), dim, generator=g), s_y, torch.randn(len(q_y), dim, generator=g), q_y)


def test_maml_post_update_score_is_one_sgd_step_on_the_support_set():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    learner = create_learner("maml", inner_lr=0.5, inner_steps=1)
    learner.setup(model, SPEC, 10)
    e = episode()
    loss, metrics = learner.score_task(model, e, training=True)
    # by hand: w' = w - lr * grad L_support(w); query loss at w'
    w, b = model.weight.detach().clone().requires_grad_(), model.bias.detach().clone().requires_grad_()
    gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(e.support_inputs, w, b), e.support_targets), (w, b))
    expected = F.cross_entropy(F.linear(e.query_inputs, w - 0.5 * gw, b - 0.5 * gb), e.query_targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    pre = F.cross_entropy(model(e.query_inputs), e.query_targets)
    assert metrics["pre_loss"] == pytest.approx(pre.item(), rel=1e-6)
    # second-order MAML: the meta-gradient flows through the inner step (it differs from FOMAML's)
    g_second = torch.autograd.grad(loss, model.weight)[0]
    fo = create_learner("maml", inner_lr=0.5, first_order=True)
    fo.setup(model, SPEC, 10)
    g_first = torch.autograd.grad(fo.score_task(model, e, training=True)[0], model.weight)[0]
    assert not torch.allclose(g_second, g_first)


def test_metasgd_learns_its_inner_rates():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    learner = create_learner("metasgd", inner_lr=0.1)
    learner.setup(model, SPEC, 10)
    rates = [p.clone() for p in learner.wrapper.lrs]
    ctx = StepContext(model=model, spec=SPEC, task_generator=torch.Generator())
    learner.train_step(model, [episode(s) for s in range(4)], create_policy("none"), ctx)
    assert any(not torch.equal(a, b) for a, b in zip(rates, learner.wrapper.lrs))


def test_prototype_logits_are_negative_squared_distances_to_class_means():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 1.0]])
    # prototypes (1, 0) and (0, 5): squared distances 1 and 1 + 16
    torch.testing.assert_close(prototype_logits(support, labels, query, 2), torch.tensor([[-1.0, -17.0]]))


def test_protonet_refuses_regression():
    from metaaugment.infra.errors import UserError

    with pytest.raises(UserError, match="regression"):
        create_learner("protonet").setup(nn.Linear(1, 1), TaskSpec(None, (1,)), 1)


def test_confidence_interval_is_1_96_standard_errors():
    values = [0.2, 0.4, 0.6, 0.8]
    mean, half = mean_and_ci95(values)
    std = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 3)
    assert mean == pytest.approx(0.5) and half == pytest.approx(1.96 * std / 2)


def sinusoid_config(**changes):
    base = dict(benchmark="sinusoid", policy="target-noise", device="cpu", epochs=2, steps_per_epoch=6,
                batch_size=3, val_tasks=5, test_tasks=20, checkpoint_every=4, log_every=2)
    base.update(changes)
    return RunConfig(**base)


def test_episodic_run_writes_meta_test_score_with_ci_and_pre_update_curves(tmp_path):
    results = train(sinusoid_config(), tmp_path / "run", show_progress=False)
    m = results["metrics"]
    assert results["kind"] == "regression" and m["test_tasks"] == 20
    assert m["test_mse_ci95"] > 0 and m["test_mse"] > 0
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert {"train_pre_mse", "train_mse", "val_pre_mse", "val_mse"} <= set(epochs[0])


# -- inner loops through higher -------------------------------------------------------------------
def conv_learner_problem(seed=0):
    """A float64 conv net with batch norm on a 3-way task of 4x4 images."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    s_y, q_y = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(3)
    e = Episode(torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), s_y,
                torch.randn(9, 1, 4, 4, generator=g, dtype=torch.float64), q_y)
    return model, e


@pytest.mark.parametrize("name", ["maml", "metasgd"])
@pytest.mark.parametrize("first_order", [False, True])
def test_higher_inner_loop_with_sgd_equals_learn2learn(name, first_order):
    """Post-update loss and meta-gradients (of the weights, and of Meta-SGD's rates) agree to 1e-6."""
    import copy

    pytest.importorskip("learn2learn")

    model, e = conv_learner_problem()
    results = {}
    for loop in ("learn2learn", "higher"):
        twin = copy.deepcopy(model)
        learner = create_learner(name, inner_lr=0.3, inner_steps=3, first_order=first_order, inner_loop=loop)
        learner.setup(twin, SPEC, 10)
        loss, metrics = learner.score_task(twin, e, training=True)
        grads = torch.autograd.grad(loss, list(learner.wrapper.parameters()))
        results[loop] = (loss.detach(), metrics, grads)
    (l2l_loss, l2l_metrics, l2l_grads), (h_loss, h_metrics, h_grads) = results["learn2learn"], results["higher"]
    torch.testing.assert_close(h_loss, l2l_loss, rtol=1e-6, atol=1e-6)
    assert h_metrics == pytest.approx(l2l_metrics, rel=1e-6, abs=1e-6)
    assert len(h_grads) == len(l2l_grads)
    for a, b in zip(h_grads, l2l_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_higher_inner_loop_evaluates_like_learn2learn():
    import copy

    pytest.importorskip("learn2learn")

    model, e = conv_learner_problem(seed=3)
    scores = []
    for loop in ("learn2learn", "higher"):
        twin = copy.deepcopy(model)
        learner = create_learner("maml", inner_lr=0.3, inner_steps=1, eval_inner_steps=4, inner_loop=loop)
        learner.setup(twin, SPEC, 10)
        scores.append(learner.evaluate(twin, [e, e]))
    assert scores[1] == pytest.approx(scores[0], rel=1e-6)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_higher_inner_optimizers_take_their_own_steps(optimizer):
    """One Adam (or momentum) inner step from a fresh state, by hand, gives the same query loss;
    and it differs from an SGD step."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    e = episode()
    e = Episode(e.support_inputs.double(), e.support_targets, e.query_inputs.double(), e.query_targets)
    learner = create_learner("maml", inner_lr=0.1, inner_steps=2, inner_loop="higher", inner_optimizer=optimizer,
                             inner_momentum=0.5)
    learner.setup(model, SPEC, 10)
    loss, _ = learner.score_task(model, e, training=True)
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    reference = torch.optim.Adam(params, lr=0.1) if optimizer == "adam" else \
        torch.optim.SGD(params, lr=0.1, momentum=0.5)
    for _ in range(2):
        reference.zero_grad()
        F.cross_entropy(F.linear(e.support_inputs, *params), e.support_targets).backward()
        reference.step()
    expected = F.cross_entropy(F.linear(e.query_inputs, *params), e.query_targets)
    # higher's Adam adds eps before dividing by sqrt(1 - beta2^t) (torch 1.x's order): ~1e-7 apart
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9 if optimizer == "momentum" else 1e-5)
    sgd = create_learner("maml", inner_lr=0.1, inner_steps=2, inner_loop="higher")
    sgd.setup(model, SPEC, 10)
    assert sgd.score_task(model, e, training=True)[0].item() != pytest.approx(loss.item(), rel=1e-6)


def test_non_sgd_inner_optimizers_need_the_higher_loop():
    from metaaugment.infra.errors import UserError

    pytest.importorskip("learn2learn")
    with pytest.raises(UserError, match="inner_optimizer must be sgd with inner_loop=learn2learn"):
        create_learner("maml", inner_loop="learn2learn", inner_optimizer="adam")


@pytest.mark.parametrize("name", ["maml", "metasgd"])
def test_our_meta_parameters_are_learn2learns_under_the_same_names(name):
    """The default (higher) loop's MAML / Meta-SGD parameters have learn2learn's state_dict
    keys and initial values, so a checkpoint loads with either inner loop."""
    pytest.importorskip("learn2learn")
    learners = [create_learner(name, inner_lr=0.25, inner_loop=loop) for loop in ("higher", "learn2learn")]
    states = []
    for learner in learners:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        learner.setup(model, SPEC, 10)
        states.append(learner.wrapper.state_dict())
    assert list(states[0]) == list(states[1]) and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    learners[1].wrapper.load_state_dict(states[0])


def test_conv4_is_learn2learns_cnn4_backbone_without_learn2learn():
    """The same seed gives learn2learn's CNN4Backbone weights, names and outputs."""
    l2l = pytest.importorskip("learn2learn")
    from metaaugment.models import FourConvBackbone

    torch.manual_seed(3)
    theirs = l2l.vision.models.CNN4Backbone(hidden_size=8, channels=3, max_pool=True)
    torch.manual_seed(3)
    ours = FourConvBackbone(3, 8)
    expected = theirs.state_dict()
    assert list(ours.state_dict()) == list(expected)
    assert all(torch.equal(value, expected[key]) for key, value in ours.state_dict().items())
    images = torch.rand(2, 3, 28, 28)
    assert torch.equal(ours(images), theirs(images))


def test_glyphs_meta_training_through_higher_matches_learn2learn_and_runs_adam(tmp_path):
    def run(name, **learner_options):
        config = RunConfig(benchmark="glyphs", policy="intershuffle", device="cpu", epochs=1, steps_per_epoch=4,
                           batch_size=2, val_tasks=5, test_tasks=10, seed=3, learner_options=learner_options)
        return train(config, tmp_path / name, show_progress=False)["metrics"]

    reference = run("learn2learn")
    through_higher = run("higher-sgd", inner_loop="higher", inner_optimizer="sgd")
    assert through_higher == pytest.approx(reference, rel=1e-6, abs=1e-6)
    adam = run("higher-adam", inner_loop="higher", inner_optimizer="adam", inner_lr=0.01)
    assert adam["steps"] == 4 and 0 <= adam["test_accuracy"] <= 1 and adam != reference
