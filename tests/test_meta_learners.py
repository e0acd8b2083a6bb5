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
from metaaugment.run.stats import mean_and_ci95

SPEC = TaskSpec(num_classes=3, input_shape=(4,), kind="few-shot")


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
    from metaaugment.errors import UserError

    with pytest.raises(UserError, match="regression"):
        create_learner("protonet").setup(nn.Linear(1, 1), TaskSpec(None, (1,), kind="regression"), 1)


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


def test_episodic_resume_after_a_crash_is_exact(tmp_path, crash_at):
    reference = train(sinusoid_config(), tmp_path / "ref", show_progress=False)
    crash_at(8)
    with pytest.raises(KeyboardInterrupt):
        train(sinusoid_config(), tmp_path / "crash", show_progress=False)
    resumed = train(sinusoid_config(), tmp_path / "crash", resume=True, show_progress=False)
    assert resumed["resumed_at_step"] == 8  # the mid-epoch checkpoint (every 4 steps) before the crash
    assert resumed["metrics"] == reference["metrics"]
    assert (tmp_path / "crash" / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
