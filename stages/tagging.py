"""The repository's trained ensemble as a tagger, for `fsd tag` and `fsd export` (the stages that tag)."""

from __future__ import annotations

from fsdlib.dataset import read_label_table
from fsdlib.paths import PATHS
from fsdlib.settings import FeatureSettings, InferenceConfig, Params
from fsdlib.spec import ModelSpec
from fsdlib.tagger import Tagger, ensemble_members


def trained_tagger(params: Params, weights: str, device: str = "auto") -> Tagger:
    """The repository's trained ensemble as a tagger (`weights`: submitted, fixed or fitted), for `fsd tag` and
    `fsd export`: the members' specs from params, the snapshots and pads the ensemble stage chose."""
    members = ensemble_members(weights, lambda name: params.read(ModelSpec, f"models.{name}"), params.folds())
    classes, _ = read_label_table(PATHS.labels)
    logmel = params.read(FeatureSettings, "features").logmel
    return Tagger.from_members(members, classes, logmel, params.read(InferenceConfig, "inference"), device)
