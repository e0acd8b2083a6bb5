"""RL-Mixup's agent and policy: the reward (Eq. 5), Appendix A's networks, that PPO learns,
and the policy inside the trainer (metrics, figures, exact resume)."""
import pytest
import torch

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy
from metaaugment.policy import StepResult
from metaaugment.rl_mixup.agent import PercentileAgent, reward_steps, scaled_reward

SMALL_AGENT = dict(extractor_channels=(8, 8, 8), features_dim=16)


def test_reward_is_eq5_scaled_validation_gain():
    assert scaled_reward(0.80, 0.70, epoch=3, epochs=10) == pytest.approx(0.03)
    assert scaled_reward(0.60, 0.70, epoch=10, epochs=10) == pytest.approx(-0.10)  # a drop is penalized in full
    assert scaled_reward(0.5, 0.0, epoch=1, epochs=4) == pytest.approx(0.125)


def test_reward_period_is_the_papers_50_steps_capped_at_a_quarter_epoch():
    assert reward_steps(500, 50) == 50  # CIFAR-100 at batch 100: the paper's t_reward
    assert reward_steps(19, 50) == 5  # digits: several rewards per episode
    assert reward_steps(2, 50) == 1


def test_agent_networks_follow_appendix_a():
    agent = PercentileAgent(batch_size=100, patches=16, steps_per_update=1000)
    extractor = agent.ppo.policy.features_extractor
    convs = [m for m in extractor.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (100, 200, (3, 3), (0, 0)), (200, 300, (3, 3), (0, 0)), (300, 400, (3, 3), (0, 0))]
    assert extractor.features_dim == 512
    assert agent.ppo.policy.share_features_extractor
    policy_net, value_net = agent.ppo.policy.mlp_extractor.policy_net, agent.ppo.policy.mlp_extractor.value_net
    assert [m.out_features for m in policy_net if isinstance(m, torch.nn.Linear)] == [64, 64]
    assert [m.out_features for m in value_net if isinstance(m, torch.nn.Linear)] == [256, 256]
    assert agent.ppo.action_space.nvec.tolist() == [10] * 100
    assert (agent.ppo.n_epochs, agent.ppo.batch_size, agent.ppo.gamma) == (20, 100, 1.001)


def test_agent_learns_to_prefer_the_rewarded_percentile():
    """A bandit: each step is its own episode and pays the share of samples given action 7."""
    torch.manual_seed(0)
    batch, patches, best = 8, 8, 7
    agent = PercentileAgent(batch, patches, steps_per_update=64, n_epochs=10, minibatch_size=32,
                            learning_rate=1e-3, gamma=0.99, **SMALL_AGENT)
    observe = lambda: torch.softmax(torch.randn(batch, patches * patches), 1).view(batch, patches, patches)  # noqa: E731
    probe = observe()
    before = agent.action_probabilities(probe).mean(0)
    for _ in range(4):
        for _ in range(64):
            actions = agent.act(observe())
            agent.record(float((actions == best).float().mean()), episode_start=True)
        stats = agent.update()
    after = agent.action_probabilities(probe).mean(0)
    assert before[best] == pytest.approx(0.1, abs=0.01)
    assert after[best] > 0.2  # at least twice chance after four PPO updates
    assert after[best] == after.max()
    assert {"policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction"} <= set(stats)


def test_agent_state_round_trip_restores_buffer_and_networks():
    torch.manual_seed(0)
    agent = PercentileAgent(4, 8, steps_per_update=6, **SMALL_AGENT)
    saliency = torch.softmax(torch.randn(4, 64), 1).view(4, 8, 8)
    for step in range(3):
        agent.act(saliency)
        agent.record(0.5 * step, episode_start=step == 0)
    state = agent.state_dict()
    torch.manual_seed(1)
    other = PercentileAgent(4, 8, steps_per_update=6, **SMALL_AGENT)
    other.load_state_dict(state)
    assert other.buffer.pos == 3 and not other.ready
    assert other.buffer.rewards[:3, 0].tolist() == [0.0, 0.5, 1.0]
    torch.testing.assert_close(other.action_probabilities(saliency), agent.action_probabilities(saliency))


def test_policy_rewards_every_period_by_eq5_and_records_episode_starts():
    spec = TaskSpec(num_classes=4, input_shape=(1, 8, 8), mean=(0.5,), std=(0.25,))
    model = create_model("small-cnn", spec, width=4)
    policy = create_policy("rl-mixup", reward_every=2, **SMALL_AGENT)
    accuracies = iter([0.5, 0.75, 0.25])
    ctx = StepContext(model=model, spec=spec, steps_per_epoch=8, epochs=4, batch_size=6,
                      evaluate=lambda fraction: {"accuracy": next(accuracies), "loss": 0.0})
    policy.setup(ctx)
    batch = Batch(torch.rand(6, 1, 8, 8), torch.randint(0, 4, (6,)))
    ctx.epoch = 1  # the second epoch: k / K = 2 / 4
    for step in range(6):
        ctx.step_in_epoch = step
        mixed = policy.augment(batch, ctx)
        assert set(mixed.params.q.tolist()) <= {0.0, 11.0, 22.0, 33.0, 44.0, 55.0, 66.0, 77.0, 88.0, 99.0}
        policy.after_step(StepResult(mixed, None, None, 0.0), ctx)
    buffer = policy.agent.buffer
    assert buffer.rewards[:6, 0].tolist() == pytest.approx([0, 0.25, 0, 0.125, 0, -0.25])
    assert buffer.episode_starts[:6, 0].tolist() == [1, 0, 0, 0, 0, 0]
    metrics = policy.on_epoch_end(ctx)
    assert sum(v for k, v in metrics.items() if k.startswith("action_q")) == pytest.approx(1.0)
    assert metrics["reward_sum"] == pytest.approx(0.125) and metrics["reward_count"] == 3


def test_preact_resnet18_has_the_published_size_and_preactivation_blocks():
    from metaaugment.models import PreActBlock

    spec = TaskSpec(num_classes=100, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    model = create_model("preact-resnet18", spec)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 11.2  # CIFAR-100 PreActResNet-18
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert [b.conv1.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_onecycle_schedule_follows_rl_mixups_appendix_a_rates():
    """lr 0.2: from 0.004, up to 0.2 over the first third of the steps, down to 0.002."""
    from metaaugment import create_learner
    from metaaugment.registry import create_policy as make_policy

    spec = TaskSpec(num_classes=3, input_shape=(1, 4, 4), mean=(0.5,), std=(0.25,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    learner = create_learner("supervised", lr=0.2, schedule="onecycle", weight_decay=1e-4)
    learner.setup(model, spec, total_steps=300)
    batch, policy = Batch(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])), make_policy("none")
    rates = [learner.train_step(model, batch, policy, StepContext(model=model, spec=spec))["lr"] for _ in range(300)]
    assert rates[0] == pytest.approx(0.004)
    assert max(rates) == pytest.approx(0.2, rel=1e-3) and rates.index(max(rates)) in range(99, 102)
    assert rates[-1] == pytest.approx(0.002, rel=0.01)
    assert learner.optimizer.param_groups[0]["momentum"] == 0.9  # momentum is not cycled


def test_the_agent_uses_only_public_stable_baselines3_api():
    import re
    from pathlib import Path

    import metaaugment.rl_mixup.agent as agent_module

    source = Path(agent_module.__file__).read_text()
    assert not re.search(r"(ppo|buffer|policy|logger)\._[a-z]", source), "private Stable-Baselines3 attribute"
    assert not re.search(r"from stable_baselines3[\w.]*\._", source)
