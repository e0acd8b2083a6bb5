"""Models follow timm's feature convention, so a timm model (or one written like it) works as
the task network of MetaAugment's shared feature extractor and of ProtoNets."""
import pytest
import torch
from helpers import quick_config
from torch import nn

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy, forward_pass, supervised_step, train
from metaaugment.registry import MODELS
from metaaugment.steptools.features import pooled_features

SPEC = TaskSpec(num_classes=4, input_shape=(3, 12, 12), mean=(0.5,) * 3, std=(0.25,) * 3)


class TimmStyleNet(nn.Module):
    """Written as timm writes its models: unpooled maps from forward_features, pooling and the
    classifier in forward_head(pre_logits=...), get_classifier() and num_features."""

    def __init__(self, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)
        self.num_features = width

    def forward_features(self, x):
        return self.stem(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def batch(n: int = 10, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g))


@pytest.mark.parametrize("name", ["small-cnn", "resnet18", "preact-resnet18", "wrn-40-2", "timm/resnet18"])
def test_registered_models_return_maps_then_pooled_features_then_logits(name):
    model = create_model(name, SPEC).eval()
    x = batch(2).inputs
    maps = model.forward_features(x)
    assert maps.dim() == 4, "forward_features gives unpooled maps, as timm's"
    pooled = model.forward_head(maps, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), model(x))
    torch.testing.assert_close(pooled_features(model, x), maps.mean(dim=(2, 3)))


def test_forward_pass_hands_policies_the_pooled_features_in_one_pass():
    torch.manual_seed(0)
    model = TimmStyleNet()
    out = forward_pass(model.eval(), batch())
    assert out.features.shape == (10, 16)
    torch.testing.assert_close(out.logits, model(batch().inputs))


@pytest.mark.parametrize("engine", ["fast", "fast-jvp", "higher", "last-layer"])
def test_metaaugment_weighs_samples_by_a_timm_style_task_network(engine):
    torch.manual_seed(0)
    model = TimmStyleNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = StepContext(model=model, spec=SPEC, optimizer=optimizer, validation_batch=lambda: batch(6, seed=1))
    policy = create_policy("metaaugment", engine=engine, policy_lr=0.01)
    policy.setup(ctx)
    assert policy.network.feature_branch[0].in_features == model.num_features
    before = [p.detach().clone() for p in policy.network.parameters()]
    result, _ = supervised_step(model, optimizer, batch(), policy, ctx)
    assert result.weights.shape == (10,) and result.weights.sum().item() == pytest.approx(1.0)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.network.parameters()))  # theta learned


@pytest.mark.slow
def test_a_real_timm_model_trains_with_metaaugment_through_the_run_loop(tmp_path):
    timm = pytest.importorskip("timm")
    with MODELS.scoped():
        @MODELS.register("timm-resnet10t")
        def timm_resnet10t(spec: TaskSpec) -> nn.Module:
            """timm's ResNet-10-T, untrained."""
            return timm.create_model("resnet10t", pretrained=False, num_classes=spec.num_classes,
                                     in_chans=spec.channels)

        results = train(quick_config(policy="metaaugment", model="timm-resnet10t", epochs=1), tmp_path / "run",
                        show_progress=False)
    assert results["metrics"]["steps"] == 1257 // 64
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["policy"]
    assert state["network.feature_branch.0.weight"].shape == (100, 512)  # resnet10t's num_features


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["none", "metaaugment"])
def test_a_timm_model_by_name_trains_on_digits(policy, tmp_path):
    pytest.importorskip("timm")
    results = train(quick_config(policy=policy, model="timm/resnet18", epochs=1), tmp_path / "run",
                    show_progress=False)
    assert results["metrics"]["steps"] == 1257 // 64 and results["config"]["model"] == "timm/resnet18"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "network.fc.weight" in state["model"] and "standardize.mean" in state["model"]
    if policy == "metaaugment":
        assert state["policy"]["network.feature_branch.0.weight"].shape == (100, 512)  # resnet18's num_features


def test_a_timm_name_that_timm_does_not_know_is_one_line():
    pytest.importorskip("timm")
    from metaaugment.infra.errors import UserError

    with pytest.raises(UserError, match="timm has no model 'resnet_nope'; similar: "):
        MODELS.get("timm/resnet_nope")


def test_protonets_embed_with_the_pooled_features():
    from metaaugment.learners.episodic import embed

    model = TimmStyleNet().eval()
    x = batch(3).inputs
    torch.testing.assert_close(embed(model, x), model.forward_head(model.forward_features(x), pre_logits=True))
