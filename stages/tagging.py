"""The repository's trained ensemble as a tagger, for `fsd tag` and `fsd export` (the stages that tag)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsdlib.dataset import read_label_table
from fsdlib.features import LogMelConfig
from fsdlib.paths import PATHS
from fsdlib.tagger import Tagger, ensemble_members
from stages.common import PARAMS, fold_ids, section
from stages.settings import inference_config, model_spec


def trained_tagger(params: dict[str, Any], weights: str, device: str = "auto", path: Path = PARAMS) -> Tagger:
    """The repository's trained ensemble as a tagger (`weights`: submitted, fixed or fitted), for `fsd tag` and
    `fsd export`: the members' specs from params, the snapshots and pads the ensemble stage chose."""
    members = ensemble_members(weights, lambda name: model_spec(params, name, path), fold_ids(params, path))
    classes, _ = read_label_table(PATHS.labels)
    logmel = LogMelConfig.from_params(section(params, "features", path))
    return Tagger.from_members(members, classes, logmel, inference_config(params, path), device)
