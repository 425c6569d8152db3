"""Settings dataclasses built from params.yaml for the stages that train, predict or tag (they load torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsdlib.inference import InferenceConfig
from fsdlib.placement import Placement
from fsdlib.spec import ModelSpec
from stages.common import PARAMS, build, section


def model_spec(params: dict[str, Any], name: str, path: Path = PARAMS) -> ModelSpec:
    """The ModelSpec of `models.<name>`."""
    return ModelSpec.from_params(section(params, f"models.{name}", path), name)


def inference_config(params: dict[str, Any], path: Path = PARAMS) -> InferenceConfig:
    """The batching settings of inference (`inference`)."""
    return build(InferenceConfig, section(params, "inference", path), "inference", path)


def placement(params: dict[str, Any], path: Path = PARAMS) -> Placement:
    """How the train stages place a model's folds on the hardware (`placement`)."""
    return build(Placement, section(params, "placement", path), "placement", path)
