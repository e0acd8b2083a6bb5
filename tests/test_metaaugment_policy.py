"""MetaAugment's embedding, sampler (Eq. 5), weights and its place in the training loop."""
import pytest
import torch
from helpers import quick_config

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy
from metaaugment.learners import forward_pass, supervised_step
from metaaugment.run.loop import train
from metaaugment.sample_aware.ops import OPS
from metaaugment.sample_aware.transformations import TransformationSampler, embed_transformations, sampler_distribution

SPEC = TaskSpec(num_classes=4, input_shape=(3, 12, 12), mean=(0.5,) * 3, std=(0.25,) * 3)


def test_embedding_puts_magnitudes_at_the_papers_positions():
    rotate, equalize, shear_y = OPS.index("Rotate"), OPS.index("Equalize"), OPS.index("ShearY")
    e = embed_transformations(torch.tensor([[rotate, shear_y], [equalize, rotate]]),
                              torch.tensor([[3.0, 7.5], [4.0, 0.0]]))
    assert e.shape == (2, 28)
    # (j, k) = (Rotate, ShearY): 1-based j = 3, k = 11 -> m1 + 1 at position 2j - 1 = 5, m2 + 1 at 2k = 22
    expected = torch.zeros(28)
    expected[5 - 1], expected[22 - 1] = 4.0, 8.5
    assert torch.equal(e[0], expected)
    # Equalize has no magnitude: 11 at position 2 * 2 - 1 = 3; Rotate second: m2 + 1 = 1 at 2 * 3 = 6
    expected = torch.zeros(28)
    expected[3 - 1], expected[6 - 1] = 11.0, 1.0
    assert torch.equal(e[1], expected)


def test_sampler_follows_eq5_on_a_hand_computed_case():
    sampler = TransformationSampler(window=2, refresh=1, epsilon=0.2, num_ops=2)
    torch.testing.assert_close(sampler.probabilities, torch.full((2, 2), 0.25))
    sampler.record(torch.tensor([[0, 0], [0, 1], [0, 1], [1, 1]]), torch.tensor([0.2, 0.3, 0.5, 0.6]))
    # v = [[0.2, 0.4], [0.4 (unseen: mean of the seen means), 0.6]], sum 1.6
    v = torch.tensor([[0.2, 0.4], [0.4, 0.6]], dtype=torch.float64)
    expected = 0.8 * v / 1.6 + 0.2 / 4
    torch.testing.assert_close(sampler.probabilities.double(), expected)
    assert sampler.probabilities.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(sampler_distribution(v, 0.2), expected)
    # the window forgets iterations older than r = 2
    sampler.record(torch.tensor([[1, 0]]), torch.tensor([1.0]))
    sampler.record(torch.tensor([[1, 0]]), torch.tensor([1.0]))
    v = sampler.mean_outputs()
    assert v[1, 0] == 1.0 and v[0, 0] == 1.0  # only pair (1, 0) seen in the window: unseen pairs take its mean


def test_sampler_draws_pairs_by_their_probability():
    sampler = TransformationSampler(num_ops=3)
    sampler.probabilities.zero_()
    sampler.probabilities[2, 1] = 1.0
    pairs, magnitudes, signs = sampler.sample(50, torch.Generator().manual_seed(0))
    assert (pairs == torch.tensor([2, 1])).all()
    assert ((magnitudes >= 0) & (magnitudes <= 10)).all() and set(signs.unique().tolist()) <= {-1.0, 1.0}


def context():
    torch.manual_seed(0)
    model = create_model("small-cnn", SPEC, width=4)
    g = torch.Generator().manual_seed(1)
    val = Batch(torch.rand(6, 3, 12, 12, generator=g), torch.randint(0, 4, (6,), generator=g))
    return StepContext(model=model, spec=SPEC, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       validation_batch=lambda: val)


def test_weights_sum_to_one_and_the_real_update_does_not_differentiate_through_p():
    policy = create_policy("metaaugment")
    ctx = context()
    policy.setup(ctx)
    batch = policy.augment(Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), ctx)
    weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
    assert weights.shape == (10,) and weights.sum().item() == pytest.approx(1.0) and (weights > 0).all()
    assert weights.grad_fn is None and not weights.requires_grad
    # a whole step: the policy's parameters receive no gradient from the task network's update
    before = [p.detach().clone() for p in policy.network.parameters()]
    policy.network.zero_grad(set_to_none=True)
    policy.optimizer.step = lambda *a, **k: None  # freeze theta to watch the real update alone
    supervised_step(ctx.model, ctx.optimizer, Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), policy, ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.network.parameters()))


def test_policy_outputs_move_and_alpha_is_learned():
    policy = create_policy("metaaugment", policy_lr=0.01)
    ctx = context()
    policy.setup(ctx)
    for _ in range(3):
        batch = Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,)))
        supervised_step(ctx.model, ctx.optimizer, batch, policy, ctx)
    assert policy.alpha.item() != pytest.approx(0.1, abs=1e-7)  # started at the task optimizer's lr
    assert int(policy.sampler.iteration) == 3


def test_transfer_reuses_a_trained_policy_frozen_to_train_another_network(tmp_path, crash_at):
    source = quick_config(policy="metaaugment", epochs=1)
    train(source, tmp_path / "source", show_progress=False)
    # another task network (width 8, not the source's 32): the policy keeps the source's features
    target = quick_config(policy="metaaugment", epochs=2, model_options={"width": 8}, checkpoint_every=10,
                          policy_from=str(tmp_path / "source"))
    results = train(target, tmp_path / "target", show_progress=False)
    assert results["config"]["policy_from"] == str(tmp_path / "source") and results["policy"]["transferred"]
    load = lambda name: torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["policy"]  # noqa: E731
    trained, reused = load("source"), load("target")
    for key in ("network.output.weight", "sampler.probabilities", "log_alpha"):
        assert torch.equal(trained[key], reused[key]), key  # frozen: identical after two whole epochs
    assert any(k.startswith("feature_model.") for k in reused)  # the source's task network gives features
    # a transfer run resumes exactly too
    crash_at(25)
    with pytest.raises(KeyboardInterrupt):
        train(target, tmp_path / "crashed", show_progress=False)
    resumed = train(target, tmp_path / "crashed", resume=True, show_progress=False)
    assert resumed["resumed_at_step"] == 20 and resumed["metrics"] == results["metrics"]


def test_policy_from_needs_a_finished_run_of_the_same_policy(tmp_path):
    from metaaugment.infra.errors import UserError

    with pytest.raises(UserError, match="not a finished run"):
        train(quick_config(policy="metaaugment", policy_from=str(tmp_path)), tmp_path / "x", show_progress=False)
    train(quick_config(policy="none", epochs=1), tmp_path / "plain", show_progress=False)
    with pytest.raises(UserError, match="that run used policy 'none', not 'metaaugment'"):
        train(quick_config(policy="metaaugment", policy_from=str(tmp_path / "plain")), tmp_path / "y",
              show_progress=False)
    with pytest.raises(UserError, match="applies to policies that can be transferred"):
        train(quick_config(policy="mixup", policy_from=str(tmp_path / "plain")), tmp_path / "z", show_progress=False)
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))


def test_wide_resnets_have_the_published_sizes():
    spec = TaskSpec(num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    sizes = {name: sum(p.numel() for p in create_model(name, spec).parameters()) for name in ("wrn-28-10", "wrn-40-2")}
    assert round(sizes["wrn-28-10"] / 1e6, 1) == 36.5 and round(sizes["wrn-40-2"] / 1e6, 1) == 2.2


def test_own_extractor_ablation_learns_its_own_features():
    policy = create_policy("metaaugment", extractor="own", policy_lr=0.01)
    ctx = context()
    policy.setup(ctx)
    supervised_step(ctx.model, ctx.optimizer, Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), policy, ctx)
    before = [p.detach().clone() for p in policy.own_extractor.parameters()]
    supervised_step(ctx.model, ctx.optimizer, Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), policy, ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.own_extractor.parameters()))


def test_val_batch_size_is_algorithm_1s_n_val_the_first_samples_of_the_validation_batch():
    def run(val_batch_size, val_count):
        policy = create_policy("metaaugment", val_batch_size=val_batch_size)
        ctx = context()
        policy.setup(ctx)
        full = ctx.validation_batch()
        ctx.validation_batch = lambda: full.replace(inputs=full.inputs[:val_count], targets=full.targets[:val_count])
        torch.manual_seed(2)
        batch = policy.augment(Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), ctx)
        weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
        return weights, policy.last["val_loss"]

    subset_weights, subset_loss = run(3, 6)  # n_val = 3 out of a validation batch of 6
    exact_weights, exact_loss = run(None, 3)  # a validation batch of exactly those 3
    whole_weights, whole_loss = run(None, 6)
    torch.testing.assert_close(subset_weights, exact_weights)
    assert float(subset_loss) == pytest.approx(float(exact_loss))
    assert not torch.allclose(subset_weights, whole_weights)


def test_the_task_optimizer_lookahead_needs_an_sgd_task_optimizer():
    from metaaugment.infra.errors import UserError

    ctx = context()
    ctx.optimizer = torch.optim.Adam(ctx.model.parameters())
    with pytest.raises(UserError, match="lookahead_optimizer=task follows the task network's torch.optim.SGD"):
        create_policy("metaaugment", lookahead_optimizer="task").setup(ctx)


@pytest.mark.parametrize("engine", ["fast", "fast-jvp", "higher"])
def test_the_task_optimizer_lookahead_takes_a_step_in_every_engine(engine):
    ctx = context()
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    policy = create_policy("metaaugment", engine=engine, lookahead_optimizer="task", policy_lr=0.01)
    policy.setup(ctx)
    for _ in range(2):  # the second step has a momentum buffer
        batch = Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,)))
        result, metrics = supervised_step(ctx.model, ctx.optimizer, batch, policy, ctx)
        assert result.weights.sum().item() == pytest.approx(1.0) and metrics["alpha"] > 0


def test_meta_every_k_meta_updates_only_every_k_th_step_and_always_weighs():
    policy = create_policy("metaaugment", meta_every=3)
    ctx = context()
    policy.setup(ctx)
    recorded = []
    for step in range(7):
        ctx.step = step
        before = [p.detach().clone() for p in policy.network.parameters()] + [policy.log_alpha.detach().clone()]
        batch = policy.augment(Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), ctx)
        weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
        after = list(policy.network.parameters()) + [policy.log_alpha]
        updated = any(not torch.equal(a, b) for a, b in zip(before, after))
        assert updated == (step % 3 == 0), step  # theta and alpha move on meta-steps only
        assert weights.sum().item() == pytest.approx(1.0) and (weights > 0).all()
        recorded.append(int(policy.sampler.output_counts.sum()))
    assert recorded == [10 * (i + 1) for i in range(7)]  # the sampler learns from every step
    with pytest.raises(Exception, match="meta_every"):
        create_policy("metaaugment", meta_every=0)


def test_rejection_zeroes_the_samples_weighted_below_the_mean_in_the_real_update_only():
    """The paper's ablation (§5.1): weights below the mini-batch's mean weight become 0 for the
    task network's update; the rest are normalized again; the policy still learns from all."""
    from metaaugment.sample_aware.policy_network import reject_below_mean

    kept = reject_below_mean(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(kept, torch.tensor([0.0, 0.0, 3 / 7, 4 / 7]))
    torch.manual_seed(0)
    policy = create_policy("metaaugment", reject_below_mean=True)
    ctx = context()
    policy.setup(ctx)
    batch = policy.augment(Batch(torch.rand(10, 3, 12, 12), torch.randint(0, 4, (10,))), ctx)
    weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
    soft = policy.last["outputs"] / policy.last["outputs"].sum()
    assert weights.sum().item() == pytest.approx(1.0)
    assert torch.equal(weights == 0, soft < soft.mean()) and 0 < int((weights == 0).sum()) < 10
    assert policy.describe()["reject_below_mean"] is True
