"""Every registered policy honours the AugmentationPolicy contract (docs/policy-interface.md)."""
import io

import numpy as np
import pytest
import torch

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy
from metaaugment.learners import forward_pass
from metaaugment.registry import POLICIES

SPEC = TaskSpec(num_classes=5, input_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)


def make_batch(size: int = 8) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.rand(size, 3, 16, 16, generator=g), torch.randint(0, 5, (size,), generator=g))


def make_context() -> StepContext:
    """A context with every service a policy may declare it needs (model with features,
    optimizer, validation batches and subsets, the run's length)."""
    model = create_model("small-cnn", SPEC, width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return StepContext(model=model, spec=SPEC, optimizer=optimizer, validation_batch=lambda: make_batch(6),
                       steps_per_epoch=10, epochs=3, evaluate=lambda fraction: {"accuracy": 0.5, "loss": 1.0})


@pytest.mark.parametrize("name", POLICIES.names())
def test_augment_contract(name):
    policy = create_policy(name)
    policy.setup(SPEC)
    batch = make_batch()
    before = (batch.inputs.clone(), batch.targets.clone())
    out = policy.augment(batch, make_context())
    assert isinstance(out, Batch) and len(out) == len(batch)
    assert out.inputs.shape == batch.inputs.shape and out.inputs.dtype == batch.inputs.dtype
    assert 0.0 <= out.inputs.min().item() and out.inputs.max().item() <= 1.0
    if out.targets.dim() == 1:
        assert out.targets.dtype == torch.int64
    else:
        assert policy.soft_labels, "soft targets from a policy that does not declare soft_labels"
        assert out.targets.shape == (len(batch), SPEC.num_classes)
        torch.testing.assert_close(out.targets.sum(1), torch.ones(len(batch)))
    # the caller's tensors are never modified in place
    assert torch.equal(batch.inputs, before[0]) and torch.equal(batch.targets, before[1])


@pytest.mark.parametrize("name", POLICIES.names())
def test_loss_weights_contract(name):
    policy = create_policy(name)
    policy.setup(SPEC)
    ctx = make_context()
    batch = policy.augment(make_batch(), ctx)
    weights = policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
    assert weights is None or (weights.shape == (len(batch),) and (weights >= 0).all())


def same(a, b) -> bool:
    """Deep equality of state values (tensors, dicts such as an optimizer's state, lists)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):  # e.g. a rollout buffer
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", POLICIES.names())
def test_state_survives_a_checkpoint_round_trip(name):
    policy = create_policy(name)
    policy.setup(SPEC)
    ctx = make_context()  # one step first, so that learned state (lazily sized networks) exists
    batch = policy.augment(make_batch(), ctx)
    policy.loss_weights(batch, forward_pass(ctx.model, batch), ctx)
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    buffer.seek(0)
    fresh = create_policy(name)
    fresh.setup(SPEC)
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    for (k1, v1), (k2, v2) in zip(policy.state_dict().items(), fresh.state_dict().items()):
        assert k1 == k2
        assert same(v1, v2), k1


@pytest.mark.parametrize("name", POLICIES.names())
def test_declared_metadata(name):
    policy = create_policy(name)
    assert policy.name == name, "registry name and policy.name must agree (config.json records it)"
    assert policy.level in ("batch", "task", "any")
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
    policy.setup(SPEC)
    batch = make_batch(64)
    out = policy.augment(batch, make_context())
    noise = (out.inputs - batch.inputs)[(batch.inputs > 0.3) & (batch.inputs < 0.7)]
    assert abs(noise.std().item() - 0.1) < 0.01
