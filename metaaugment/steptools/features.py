"""A task network's features, read the timm way.

Every registered model, and any timm model, follows timm's convention: `forward_features(x)`
gives the unpooled feature maps, `forward_head(maps, pre_logits=True)` the pooled (B, D)
features (the input of the final linear layer) and `forward_head(maps)` the logits;
`get_classifier()` is that final layer and `num_features` its input width D. Policies
(MetaAugment's policy network, its last-layer lookahead) and learners (ProtoNets' embeddings)
read features through these functions, so a user's model that follows the convention gets
them too, and one that does not is told so in one line.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from metaaugment.infra.errors import UserError
from metaaugment.spec import TaskSpec
from metaaugment.steptools.scratch import scratch_buffers


def has_features(model: nn.Module) -> bool:
    """Whether `model` exposes its features the timm way (forward_features and forward_head)."""
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def pooled_features(model: nn.Module, inputs: Tensor) -> Tensor:
    """(B, ...) inputs -> (B, D) pooled features, the input of the model's final linear layer:
    timm's forward_head(forward_features(x), pre_logits=True)."""
    return model.forward_head(model.forward_features(inputs), pre_logits=True)


def classifier(model: nn.Module) -> nn.Module | None:
    """The model's final linear layer (timm's `get_classifier()`), or None."""
    get = getattr(model, "get_classifier", None)
    return get() if callable(get) else None


FEATURE_MODEL_PREFIX = "feature_model."


def transferred_feature_model(policy_state: dict, feature_model: nn.Module) -> nn.Module:
    """The frozen task network a transferred policy reads its features from: `feature_model`
    as given (a finished run's network, loaded), or, where `policy_state` holds a network
    already (`feature_model.*` keys: the state of a run that was itself transferred, e.g. an
    export), a copy of `feature_model` loaded with those weights. In eval mode, no gradient."""
    saved = {key[len(FEATURE_MODEL_PREFIX):]: value for key, value in policy_state.items()
             if key.startswith(FEATURE_MODEL_PREFIX)}
    if saved:
        feature_model = copy.deepcopy(feature_model)
        feature_model.load_state_dict(saved)
    return feature_model.eval().requires_grad_(False)


def feature_width(model: nn.Module, spec: TaskSpec, needed_by: str = "this policy") -> int:
    """D of the model's pooled features: timm's `num_features`, else measured on one blank
    input (in eval mode, with scratch buffers, so the model is left exactly as it was)."""
    if not has_features(model):
        raise UserError(f"{needed_by} needs a task network exposing forward_features / forward_head "
                        "(the timm convention; every registered model does)")
    width = getattr(model, "num_features", None)
    if isinstance(width, int):
        return width
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    with torch.no_grad(), scratch_buffers(model):
        model.eval()
        width = pooled_features(model, torch.zeros(1, *spec.input_shape, device=device)).shape[1]
    model.train(was_training)
    return int(width)
