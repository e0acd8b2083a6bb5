"""AdaAug: the search's gradient to the head (the classifier on op-mixed features), the exploit
phase's magnitude perturbation, and a searched head transferred, frozen, to a new network."""
from __future__ import annotations

import pytest
import torch
from helpers import quick_config

from metaaugment import Batch, StepContext, TaskSpec, create_model
from metaaugment.adaaug import AdaAug, perturb_magnitudes
from metaaugment.adaaug.policy import AdaAugDraws
from metaaugment.export import load_exported_model, load_exported_policy
from metaaugment.losses import per_sample_cross_entropy
from metaaugment.run.export import export_run
from metaaugment.run.loop import train
from metaaugment.sample_aware.ops import MAX_MAGNITUDE, apply_ops

SPEC = TaskSpec(num_classes=5, input_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)


def test_the_search_step_follows_the_validation_loss_of_the_classifier_on_op_mixed_features():
    """The head's gradient in a search step equals the gradient of
    CE(g(sum_k p_k f(op_k(x_val, m_k)))), written here op by op, with f and g the task
    network's pooled features and classifier in evaluation mode, p at temperature 1."""
    torch.manual_seed(0)
    model = create_model("small-cnn", SPEC, width=4)
    val = Batch(torch.rand(6, 3, 16, 16), torch.randint(0, 5, (6,)))
    ctx = StepContext(model=model, spec=SPEC, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      validation_batch=lambda: val, batch_size=8)
    policy = AdaAug(search_temperature=4.0)  # the explore ignores the training draws' temperature
    policy.setup(ctx)
    policy.optimizer.step = lambda: None  # keep the gradient the step would take
    signs = torch.where(torch.rand(8, len(policy.pool)) < 0.5, -1.0, 1.0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    policy._search(signs, ctx)
    found = [p.grad.clone() for p in policy.head.parameters()]
    assert model.training  # left as it was, with its BatchNorm statistics untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # the search does not train the task network

    model.eval()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(val.inputs), pre_logits=True)
    outputs = policy.head(features)
    ops = len(policy.pool)
    magnitudes, probabilities = torch.sigmoid(outputs[:, :ops]), torch.softmax(outputs[:, ops:], 1)
    mixed = 0
    for k in range(ops):
        m = magnitudes[:, k]
        image = apply_ops(val.inputs, torch.full((6,), k), MAX_MAGNITUDE * m.detach(), signs[:6, k], policy.pool)
        image = image + (m - m.detach()).view(-1, 1, 1, 1)  # straight through
        mixed = mixed + probabilities[:, k:k + 1] * model.forward_head(model.forward_features(image), pre_logits=True)
    loss = per_sample_cross_entropy(model.get_classifier()(mixed), val.targets).mean()
    expected = torch.autograd.grad(loss, list(policy.head.parameters()))
    for got, want in zip(found, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_exploit_perturbation_moves_each_magnitude_by_up_to_delta_within_0_and_1():
    magnitudes = torch.tensor([[0.5, 0.95, 0.1]])
    moved = perturb_magnitudes(magnitudes, torch.tensor([[1.0, 0.5, 1.0]]), torch.tensor([[1.0, 1.0, -1.0]]), 0.3)
    torch.testing.assert_close(moved, torch.tensor([[0.8, 1.0, 0.0]]))


def test_a_searched_head_is_exploited_frozen_on_a_new_network_and_exports(tmp_path):
    search = train(quick_config(policy="adaaug", epochs=1), tmp_path / "search", show_progress=False)
    assert search["policy"]["transferred"] is False and "search_val_loss" in (tmp_path / "search" /
                                                                             "metrics.csv").read_text()
    exploit = quick_config(policy="adaaug", epochs=1, model_options={"width": 8},
                           policy_from=str(tmp_path / "search"))
    results = train(exploit, tmp_path / "exploit", show_progress=False)
    assert results["policy"]["transferred"] is True
    load = lambda name: torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)  # noqa: E731
    searched, exploited = load("search"), load("exploit")
    head = [k for k in searched["policy"] if k.startswith("head.")]
    assert head and all(torch.equal(searched["policy"][k], exploited["policy"][k]) for k in head)  # frozen
    for key, value in searched["model"].items():  # the search's network gives the features
        assert torch.equal(exploited["policy"][f"feature_model.{key}"], value), key
    # the exported exploit policy rebuilds the search's network beside the new one, and draws k = 2
    model_file, policy_file = export_run(tmp_path / "exploit")
    policy, ctx = load_exported_policy(policy_file, load_exported_model(model_file))
    assert all(torch.equal(p, searched["model"][k]) for k, p in policy.feature_model.state_dict().items())
    augmented = policy.augment(Batch(torch.rand(16, 1, 8, 8), torch.randint(10, (16,))), ctx)
    assert isinstance(augmented.params, AdaAugDraws) and augmented.params.uniforms.shape == (16, 2)
    assert not torch.equal(augmented.inputs, torch.zeros(16, 1, 8, 8))


def test_a_search_run_needs_no_policy_from_and_an_exploit_refuses_another_policys_run(tmp_path):
    from metaaugment.infra.errors import UserError

    train(quick_config(policy="madaug", epochs=1), tmp_path / "madaug", show_progress=False)
    with pytest.raises(UserError, match="that run used policy 'madaug', not 'adaaug'"):
        train(quick_config(policy="adaaug", policy_from=str(tmp_path / "madaug")), tmp_path / "x",
              show_progress=False)
    with pytest.raises(UserError, match=r"transferred \(metaaugment, adaaug\)|transferred \(adaaug, metaaugment\)"):
        train(quick_config(policy="madaug", policy_from=str(tmp_path / "madaug")), tmp_path / "y",
              show_progress=False)
