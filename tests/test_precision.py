"""--precision, --channels-last and --compile: what runs on CPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import quick_config

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy
from metaaugment.infra.errors import UserError
from metaaugment.learners import forward_pass
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train

SPEC = TaskSpec(num_classes=4, input_shape=(3, 12, 12), mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("engine", ["fast", "fast-jvp", "higher", "last-layer"])
def test_metaaugment_s_lookahead_under_bf16_is_the_float32_lookahead(engine):
    """The lookahead runs in float32 whatever the precision; the fast engine recomputes the
    training losses in float32, so its gradients are the float32 engine's."""
    torch.manual_seed(0)
    model = create_model("small-cnn", SPEC, width=4)
    g = torch.Generator().manual_seed(1)
    val = Batch(torch.rand(6, 3, 12, 12, generator=g), torch.randint(0, 4, (6,), generator=g))
    batch = Batch(torch.rand(8, 3, 12, 12, generator=g), torch.randint(0, 4, (8,), generator=g))
    weights = torch.softmax(torch.randn(8, generator=g), 0)
    results = {}
    for precision in ("32", "bf16"):
        policy = create_policy("metaaugment", engine=engine)
        ctx = StepContext(model=model, spec=SPEC, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                          validation_batch=lambda: val, precision=precision)
        policy.setup(ctx)
        with ctx.autocast():
            output = forward_pass(model, batch)
        results[precision] = policy._lookahead(ctx, batch, output, weights)
    if engine != "last-layer":  # the head's input features come from the bf16 forward
        torch.testing.assert_close(results["bf16"].weights, results["32"].weights, rtol=1e-4, atol=1e-7)
        assert results["bf16"].alpha.item() == pytest.approx(results["32"].alpha.item(), rel=1e-4)
    else:
        assert torch.nn.functional.cosine_similarity(results["bf16"].weights, results["32"].weights, dim=0) > 0.99


@pytest.mark.parametrize("policy", ["none", "mixup", "metaaugment", "madaug", "adaaug"])
def test_bf16_training_follows_float32_training(policy, tmp_path):
    full = train(quick_config(policy=policy, epochs=2), tmp_path / "32", show_progress=False)["metrics"]
    half = train(quick_config(policy=policy, epochs=2, precision="bf16"), tmp_path / "bf16",
                 show_progress=False)["metrics"]
    assert abs(half["test_accuracy"] - full["test_accuracy"]) < 0.03
    assert half["test_loss"] == pytest.approx(full["test_loss"], rel=0.05)


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path):
    eager = train(quick_config(epochs=1), tmp_path / "eager", show_progress=False)["metrics"]
    compiled = train(quick_config(epochs=1, compile=True), tmp_path / "compiled", show_progress=False)["metrics"]
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-3)
    # the checkpoint keeps the eager parameter names: it loads into an uncompiled model
    state = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)["model"]
    create_model("small-cnn", TaskSpec(num_classes=10, input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,))
                 ).load_state_dict(state)


@pytest.mark.parametrize("changes, message", [
    (dict(precision="8"), "--precision must be 32, bf16 or 16"),
    (dict(benchmark="glyphs", precision="bf16"), "--precision applies to mini-batch benchmarks"),
    (dict(benchmark="glyphs", compile=True), "--compile applies to mini-batch benchmarks"),
])
def test_unsupported_precision_settings_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(RunConfig(), **changes).resolve()


def test_float16_on_cpu_comes_with_a_note_pointing_at_bf16():
    from metaaugment.steptools.precision import precision_note

    assert "bf16" in precision_note(torch.device("cpu"), "16")
    assert precision_note(torch.device("cpu"), "bf16") is None and precision_note(torch.device("cuda"), "16") is None
