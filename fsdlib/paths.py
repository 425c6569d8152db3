"""Where the pipeline's stages read and write: every data, model, state and metrics path in one place.

Paths are relative to `root` (the repository root, where DVC runs the stages); tests point `root` at a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """The on-disk layout of one pipeline run, as dvc.yaml declares its outputs."""

    root: Path = Path(".")

    @property
    def demo(self) -> Path:
        """The generated demo dataset, an FSDKaggle2019-layout root."""
        return self.root / "data/demo"

    @property
    def features(self) -> Path:
        """Feature stores of every subset, and the label table beside them."""
        return self.root / "data/features"

    @property
    def labels(self) -> Path:
        return self.features / "labels.parquet"

    @property
    def folds(self) -> Path:
        return self.root / "data/folds.parquet"

    @property
    def models(self) -> Path:
        return self.root / "data/models"

    @property
    def pseudo(self) -> Path:
        return self.root / "data/pseudo"

    @property
    def teacher(self) -> Path:
        """The teacher's per-fold predictions on the noisy clips."""
        return self.pseudo / "teacher.npz"

    @property
    def predictions(self) -> Path:
        return self.root / "data/predictions"

    @property
    def submission(self) -> Path:
        return self.root / "data/submission.csv"

    @property
    def tagger(self) -> Path:
        """The submitted ensemble in one file, for tagging anywhere (`fsd export`)."""
        return self.root / "data/tagger.pt"

    @property
    def tagger_onnx(self) -> Path:
        """The same ensemble as one ONNX graph (its weights beside it in `tagger.onnx.data`), for onnxruntime."""
        return self.root / "data/tagger.onnx"

    @property
    def distill(self) -> Path:
        """The distilled network's snapshots, held-out predictions, metrics and curves (`fsd distill`)."""
        return self.root / "data/distill"

    @property
    def distilled_tagger(self) -> Path:
        """The distilled network in the tagger file format."""
        return self.root / "data/tagger_distilled.pt"

    @property
    def distilled_onnx(self) -> Path:
        """The distilled network as one self-contained ONNX file, for onnxruntime."""
        return self.root / "data/tagger_distilled.onnx"

    @property
    def ensemble_weights(self) -> Path:
        """The ensemble's fixed and fitted weights, and which of them the submission used."""
        return self.root / "data/ensemble.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def state(self) -> Path:
        """Resumable training state, outside DVC's outputs so an interrupted stage can continue."""
        return self.root / "state"

    def fold_dir(self, model: str, fold: int) -> Path:
        """Snapshots, OOF predictions, metrics and dvclive curves of one (model, fold)."""
        return self.models / model / f"fold{fold}"

    def state_dir(self, model: str, fold: int) -> Path:
        return self.state / f"{model}-fold{fold}"

    def predictions_of(self, model: str) -> Path:
        """One model's test and OOF predictions."""
        return self.predictions / f"{model}.npz"

    def pseudo_labels(self, variant: str) -> Path:
        """The soft pseudo labels of one variant (all_folds or leak_free)."""
        return self.pseudo / f"{variant}.parquet"


PATHS = Paths()
