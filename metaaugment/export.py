"""Load what a finished run exported, without the run folder.

`metaaug export RUN` (or `metaaugment.run.export.export_run`) writes two files that load with
`torch.load(weights_only=True)`, so a file someone hands you cannot run code:

- model.pt: {"format", "model", "model_options", "spec", "state_dict"}: the task network the
  run tested (the best-validation one where the run tests that), with what rebuilds it;
- policy.pt: {"format", "policy", "policy_options", "context", "state_dict"}: the policy's
  learned state (MetaAugment: its policy network, alpha and sampler distribution;
  RL-Mixup: its PPO agent), the options it was built with and the loop sizes its setup
  needs.

`load_exported_model` and `load_exported_policy` rebuild them; an exported MetaAugment
policy is frozen and weighs samples with the exported task network's features, as
`--policy-from` does (docs/workflow.md, "Export a run").

An exported file is data: the model and policy it names are built by their registered
names; a `module:Name` reference in it is refused unless the caller passes `trust_code=True`
(metaaugment.infra.trust), and its options are held to the factory's declared types.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaaugment.infra.downloads import offline_options
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_torch
from metaaugment.infra.schema import SchemaError, check_value, clip, short
from metaaugment.infra.trust import refuse_code_references
from metaaugment.policy import AugmentationPolicy, StepContext
from metaaugment.registry import create_model, create_policy
from metaaugment.spec import TaskSpec

EXPORT_FORMAT = "metaaugment.export/1"
MODEL_FILE, POLICY_FILE = "model.pt", "policy.pt"


# What each exported file holds, checked before anything is built from it.
MODEL_SCHEMA = {"model": str, "model_options": dict[str, Any], "spec": dict[str, Any],
                "state_dict": dict[str, torch.Tensor]}
POLICY_SCHEMA = {"policy": str, "policy_options": dict[str, Any], "context": dict[str, int | None],
                 "state_dict": dict[str, Any], "feature_model": dict[str, Any] | None}
# a transferred policy's frozen network (its registry name and options; None: the exported model's)
FEATURE_MODEL_SCHEMA = {"model": str, "model_options": dict[str, Any]}
SPEC_SCHEMA = {"num_classes": int | None, "input_shape": tuple[int, ...], "mean": tuple[float, ...],
               "std": tuple[float, ...], "kind": str}  # kind: in files of earlier versions, not used
CONTEXT_FIELDS = ("batch_size", "steps_per_epoch", "epochs")


def _read(path: Path, what: str, schema: dict[str, Any], trust_code: bool) -> dict[str, Any]:
    """An export file's contents, loaded with weights_only, held to `schema`, its code
    references refused unless `trust_code`."""
    try:
        contents = load_torch(Path(path))  # weights_only=True
    except UserError:  # not a regular file
        raise
    except Exception as error:  # missing, truncated, or objects beyond weights_only
        raise UserError(f"{path} cannot be read as a metaaugment {what} export ({type(error).__name__}: "
                        f"{clip(str(error), 160)})") from None
    if not isinstance(contents, dict) or contents.get("format") != EXPORT_FORMAT or what not in contents:
        raise UserError(f"{path} is not a metaaugment {what} export ({EXPORT_FORMAT})")
    try:
        checked = {key: check_value(contents.get(key), kind, key) for key, kind in schema.items()}
    except SchemaError as error:
        raise UserError(f"{path} is a damaged {what} export ({error})") from None
    refuse_code_references(checked, str(path), trust_code=trust_code, keys=(what,))
    return checked


def _feature_model(source: dict[str, Any] | None, model: nn.Module, path: Path, trust_code: bool) -> nn.Module:
    """The architecture of a transferred policy's frozen network (its weights come with the
    policy's state): built by registry name where the export records one, else `model`."""
    if source is None:
        return model
    try:
        checked = {key: check_value(source.get(key), kind, f"feature_model {key}")
                   for key, kind in FEATURE_MODEL_SCHEMA.items()}
    except SchemaError as error:
        raise UserError(f"{path} is a damaged policy export ({error})") from None
    refuse_code_references(checked, str(path), trust_code=trust_code, keys=("model",))
    return create_model(checked["model"], model.spec, **offline_options(checked["model_options"]))


def _spec(data: dict[str, Any], path: Path) -> TaskSpec:
    unknown = sorted(set(data) - set(SPEC_SCHEMA))
    try:
        if unknown:
            raise SchemaError(f"spec has unknown fields {', '.join(map(short, unknown))}")
        return TaskSpec(**{key: check_value(value, SPEC_SCHEMA[key], f"spec {key}") for key, value in data.items()
                           if key != "kind"})
    except (SchemaError, TypeError) as error:
        raise UserError(f"{path} is a damaged model export ({error})") from None


def load_exported_model(path: Path, device: str | torch.device = "cpu", *, trust_code: bool = False) -> nn.Module:
    """The task network of a model.pt, rebuilt by its registry name and loaded, in eval mode;
    its `spec` attribute is the TaskSpec it was built for (inputs (B, *spec.input_shape) in [0, 1]).
    A model named by module:Name is built only with `trust_code`."""
    contents = _read(path, "model", MODEL_SCHEMA, trust_code)
    spec = _spec(contents["spec"], Path(path))
    model = create_model(contents["model"], spec, **offline_options(contents["model_options"]))  # weights: the file's
    try:
        model.load_state_dict(contents["state_dict"])
    except RuntimeError as error:
        raise UserError(f"{path}: its weights do not fit its model ({clip(str(error), 160)})"
                        ) from None
    model.spec = spec
    return model.to(device).eval()


def load_exported_policy(path: Path, model: nn.Module, *, trust_code: bool = False
                         ) -> tuple[AugmentationPolicy, StepContext]:
    """The policy of a policy.pt and the StepContext to call it with, for `model` (the
    exported task network: MetaAugment weighs samples by its features). Use it on a batch
    of images in [0, 1]: `policy.augment(batch, ctx)` draws each sample's transformation
    from the learned distribution; MetaAugment's `policy.loss_weights(augmented, None, ctx)`
    gives the frozen policy network's (B,) weights, summing to 1. A policy named by
    module:Name is built only with `trust_code`."""
    contents = _read(path, "policy", POLICY_SCHEMA, trust_code)
    spec = getattr(model, "spec", None)
    if spec is None:
        raise UserError("load_exported_policy needs the model from load_exported_model (it carries the spec)")
    context = contents["context"]
    if set(context) - set(CONTEXT_FIELDS):
        raise UserError(f"{path} is a damaged policy export (context may hold only {', '.join(CONTEXT_FIELDS)})")
    policy = create_policy(contents["policy"], **contents["policy_options"])
    ctx = StepContext(model=model, spec=spec, **context)
    policy.setup(ctx)
    policy.to(next(model.parameters()).device)
    try:
        if policy.transferable:
            policy.load_transferred(contents["state_dict"], _feature_model(contents["feature_model"], model, path,
                                                                           trust_code))
        else:
            policy.load_state_dict(contents["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise UserError(f"{path}: its state does not fit policy '{contents['policy']}' "
                        f"({clip(str(error), 160)})") from None
    return policy.eval(), ctx
