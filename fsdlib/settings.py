"""params.yaml as typed settings: one dataclass per section, built one way (`Params.read`), checked once there.

Torch-free and light (yaml and fsdlib.errors), so that any stage, script or tagger can read its settings for nothing.
Defaults live only in these dataclasses and in fsdlib/spec.py (a model's section, and `distill` which holds one); the
library's functions take the built settings and trust them. Each choice is validated once, where its dataclass is
built, with one error that names the file and the params key.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fsdlib.errors import FsdError, check_choice

PARAMS = Path("params.yaml")
T = TypeVar("T")

SELECT_MODES = ("fixed", "cv")  # snapshots: all cycles x pads | those chosen by OOF lwlrap (docs/method.md §8)
SUBMIT_MODES = ("fixed", "fitted")  # the submitted ensemble's weights: as given | fitted on OOF predictions
FIT_OVER = ("weighted", "all")  # the fitted weights use: the positively weighted models | every predicted model
WAVE_STORES = ("copy", "reference")  # waveform store: samples copied | canonical WAVs read in place (§2)
FOLD_METHODS = ("multilabel_stratified", "kfold")


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel settings (docs/method.md §2): librosa's melspectrogram with these arguments, centred, zero-padded."""

    sample_rate: int = 44100
    n_mels: int = 128
    n_fft: int = 2560
    hop_length: int = 347
    fmin: float = 20.0
    fmax: float = 22050.0

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT: one per hop, plus one."""
        return 1 + n_samples // self.hop_length


@dataclass(frozen=True)
class DataSettings:
    """`data`: the FSDKaggle2019-layout root the pipeline reads."""

    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root:
            raise FsdError(f"root must be a folder path, got {self.root!r}")


@dataclass(frozen=True)
class FeatureSettings(LogMelConfig):
    """`features`: the log-mel settings (docs/method.md §2) and how the stage builds the stores."""

    batch_seconds: float = 60.0  # audio per batch of the log-mel computation
    wave_store: str = "copy"

    def __post_init__(self) -> None:
        check_choice("wave_store", self.wave_store, WAVE_STORES)
        if self.batch_seconds <= 0:
            raise FsdError(f"batch_seconds must be positive, got {self.batch_seconds}")

    @property
    def logmel(self) -> LogMelConfig:
        """The log-mel settings alone (what the stores and taggers record)."""
        return LogMelConfig(**{f.name: getattr(self, f.name) for f in fields(LogMelConfig)})


@dataclass(frozen=True)
class FoldSettings:
    """`folds`: how curated clips are split (docs/method.md §4), and which folds the train stages train."""

    n_folds: int = 5
    seed: int = 0
    method: str = "multilabel_stratified"
    ids: tuple[int, ...] | None = None  # None: every fold

    def __post_init__(self) -> None:
        check_choice("method", self.method, FOLD_METHODS)
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise FsdError(f"n_folds must be at least 2, got {self.n_folds!r}")
        if self.ids is not None and (not self.ids or not all(0 <= k < self.n_folds for k in self.ids)):
            raise FsdError(f"ids must be folds in 0..{self.n_folds - 1}, got {list(self.ids)}")

    @property
    def trained(self) -> list[int]:
        """The folds trained and predicted."""
        return list(range(self.n_folds)) if self.ids is None else [int(k) for k in self.ids]


@dataclass(frozen=True)
class SplSettings:
    """`spl`: the teacher of the soft pseudo labels and their sharpening (docs/method.md §6)."""

    teacher: str
    temperature: float = 2.0
    select: str = "fixed"  # the teacher's snapshots: all cycles (the paper) | chosen by its training OOF

    def __post_init__(self) -> None:
        check_choice("select", self.select, SELECT_MODES)
        if self.temperature <= 0:
            raise FsdError(f"temperature must be positive, got {self.temperature}")


@dataclass(frozen=True)
class InferenceConfig:
    """`inference`: grouping of clips into batches, padded length <= (1 + tolerance) x each clip's own
    (docs/method.md §8)."""

    tolerance: float = 0.2
    max_batch: int = 64
    max_elements: int = 32_000_000  # cap on batch × padded length × inner size (memory bound)
    # Waveform batches: cap on batch × padded samples. An EnvNet-v2 needs ~100 (demo width) to ~200 bytes (paper
    # width) per input sample at inference, so 32 M samples took 6.8 GiB; 4 M (three 30 s clips) stays under 1 GiB
    # (benchmarks/bench_scale.py), and batches of long clips gain nothing on the CPU (benchmarks/README.md).
    max_samples: int = 4_000_000
    # Anonymous memory a process may keep after a batch; above it, freed memory goes back to the system. Without
    # it the teacher held 4.9 GiB after the noisy clips of a quarter of FSDKaggle2019, growing with the dataset.
    max_heap: int = 2 << 30

    def __post_init__(self) -> None:
        if self.tolerance < 0 or min(self.max_batch, self.max_elements, self.max_samples, self.max_heap) < 1:
            raise FsdError("need tolerance >= 0 and positive max_batch, max_elements, max_samples and max_heap")


@dataclass(frozen=True)
class EnsembleSettings:
    """`ensemble`: the models' fixed weights (0: reported, not averaged) and how the submission is chosen."""

    weights: dict[str, float]
    submit: str = "fixed"
    select: str = "fixed"
    fit_over: str = "weighted"

    def __post_init__(self) -> None:
        check_choice("submit", self.submit, SUBMIT_MODES)
        check_choice("select", self.select, SELECT_MODES)
        check_choice("fit_over", self.fit_over, FIT_OVER)
        if not isinstance(self.weights, dict) or not self.weights:
            raise FsdError(f"weights must map model names to weights, got {self.weights!r}")
        try:
            weights = {str(k): float(v) for k, v in self.weights.items()}
        except (TypeError, ValueError):
            raise FsdError(f"weights must be numbers, got {self.weights!r}") from None
        if min(weights.values()) < 0 or not any(weights.values()):
            raise FsdError(f"weights must be >= 0 and not all 0, got {weights}")
        object.__setattr__(self, "weights", weights)


def build(cls: type[T], values: dict[str, Any], key: str, path: Path | None = PARAMS) -> T:
    """The settings `cls` of the params section `key`: YAML lists become tuples, a field marked with a `section`
    is built from its own mapping, and any problem is one FsdError naming the file and the key."""
    if not isinstance(values, dict):
        raise FsdError(f"params section {key!r} must be a mapping", path)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FsdError(f"{key}: unknown keys {unknown} (known: {sorted(known)})", path)
    missing = sorted(n for n, f in known.items() if n not in values
                     and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise FsdError(f"{key}: missing keys {missing}", path)
    kwargs = {}
    for name, value in values.items():
        nested = known[name].metadata.get("section")
        if nested is not None:
            kwargs[name] = build(nested, value, f"{key}.{name}", path)
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except FsdError as exc:  # from the settings' own checks (a nested section's error has left the loop above)
        raise FsdError(f"{key}.{exc.problem}" if _names_a_key(exc.problem, known) else f"{key}: {exc.problem}",
                       path) from None
    except (TypeError, ValueError) as exc:  # a value of the wrong type
        raise FsdError(f"{key}: {exc}", path) from None


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's contents; FsdError `missing` if it does not exist, or naming the YAML error."""
    if not path.is_file():
        raise FsdError(missing, path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FsdError(f"not valid YAML ({exc})", path) from None


def _names_a_key(problem: str, known: dict[str, Any]) -> bool:
    """Whether an error reads `<key> must ...` for one of the section's keys (then: `section.key must ...`)."""
    words = problem.split(" ", 2)
    return len(words) > 1 and words[0].split(".")[0] in known and words[1] == "must"


@dataclass(frozen=True)
class Params:
    """A params file, read once; `read` builds one section's settings."""

    values: dict[str, Any]
    path: Path = PARAMS

    @classmethod
    def load(cls, path: Path = PARAMS) -> Params:
        """The whole params file; a missing or malformed file is an FsdError naming it."""
        values = read_yaml(path, "params file not found (run from the repository root)")
        if not isinstance(values, dict):
            raise FsdError("expected a mapping of stage sections", path)
        return cls(values, path)

    def section(self, key: str) -> Any:
        """The raw value at a dotted key (e.g. 'models.A'), which must exist."""
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise FsdError(f"missing params section {key!r}", self.path)
            node = node[part]
        return node

    def read(self, cls: type[T], key: str) -> T:
        """The settings `cls` of section `key`, checked."""
        return build(cls, self.section(key), key, self.path)

    def folds(self) -> list[int]:
        """The folds the train and predict stages use (`folds.ids`)."""
        return self.read(FoldSettings, "folds").trained

    def model_list(self, key: str) -> list[str]:
        """A list of model names (e.g. `stage_models.predict`)."""
        names = self.section(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FsdError(f"{key} must be a list of model names, got {names!r}", self.path)
        return names
