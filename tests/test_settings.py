"""params.yaml as typed settings (fsdlib/settings.py): every section builds one way, each problem is one error naming
the key, the settings import no torch, and each choice is checked in one place."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsdlib.errors import FsdError
from fsdlib.placement import Placement
from fsdlib.settings import (
    DataSettings,
    EnsembleSettings,
    FeatureSettings,
    FoldSettings,
    InferenceConfig,
    Params,
    SplSettings,
    build,
)
from fsdlib.spec import DistillSettings, ModelSpec, model_spec
from fsdlib.synth import SynthConfig

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"data": DataSettings, "synth": SynthConfig, "features": FeatureSettings, "folds": FoldSettings,
            "placement": Placement, "spl": SplSettings, "inference": InferenceConfig, "ensemble": EnsembleSettings,
            "distill": DistillSettings}


@pytest.mark.parametrize("name", ["params.yaml", "params/paper.yaml"])
def test_every_section_of_the_params_files_builds(name: str) -> None:
    params = Params.load(ROOT / name)
    for key, cls in SECTIONS.items():
        if key in params.values:
            assert isinstance(params.read(cls, key), cls)
    assert {params.read(ModelSpec, f"models.{m}").family for m in params.section("models")} <= {"resnet", "envnet"}
    ensemble = params.read(EnsembleSettings, "ensemble")
    assert all(isinstance(w, float) for w in ensemble.weights.values())
    assert set(params.folds()) <= set(range(params.read(FoldSettings, "folds").n_folds))


def test_settings_are_torch_free() -> None:
    code = ("import sys; from fsdlib.settings import Params, InferenceConfig; from fsdlib.spec import ModelSpec, "
            "DistillSettings; p = Params.load(); p.read(ModelSpec, 'models.A'); p.read(DistillSettings, 'distill'); "
            "p.read(InferenceConfig, 'inference');"
            " print(sorted(m for m in ('torch', 'librosa', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lists_become_tuples_and_nested_sections_build() -> None:
    distill = build(DistillSettings, {"subsets": ["curated", "test"], "model": {"family": "resnet", "multitask": False,
                                                                               "tta_pads": [4, 8]}}, "distill")
    assert distill.subsets == ("curated", "test") and distill.model.tta_pads == (4, 8)
    assert build(FoldSettings, {"n_folds": 3, "ids": [0, 2]}, "folds").trained == [0, 2]
    assert build(FoldSettings, {"n_folds": 3}, "folds").trained == [0, 1, 2]
    features = build(FeatureSettings, {"n_mels": 64, "wave_store": "reference"}, "features")
    assert features.logmel.n_mels == 64 and not hasattr(features.logmel, "wave_store")


@pytest.mark.parametrize(("cls", "values", "key", "message"), [
    (InferenceConfig, {"max_bach": 3}, "inference", r"params.yaml: inference: unknown keys \['max_bach'\]"),
    (EnsembleSettings, {"submit": "fixed"}, "ensemble", r"ensemble: missing keys \['weights'\]"),
    (EnsembleSettings, {"weights": {"A": 1}, "submit": "best"}, "ensemble", "ensemble.submit must be fixed or fitted"),
    (EnsembleSettings, {"weights": {"A": 1}, "select": "all"}, "ensemble", "ensemble.select must be fixed or cv"),
    (EnsembleSettings, {"weights": {"A": 1}, "fit_over": "some"}, "ensemble", "ensemble.fit_over must be weighted or"),
    (EnsembleSettings, {"weights": {"A": "x"}}, "ensemble", "ensemble.weights must be numbers"),
    (EnsembleSettings, {"weights": {"A": 0}}, "ensemble", "ensemble.weights must be >= 0 and not all 0"),
    (SplSettings, {"teacher": "A", "select": "all"}, "spl", "spl.select must be fixed or cv, got 'all'"),
    (FeatureSettings, {"wave_store": "link"}, "features", "features.wave_store must be copy or reference"),
    (FoldSettings, {"method": "random"}, "folds", "folds.method must be multilabel_stratified or kfold"),
    (FoldSettings, {"n_folds": 1}, "folds", "folds.n_folds must be at least 2"),
    (FoldSettings, {"n_folds": 4, "ids": [0, 4]}, "folds", r"folds.ids must be folds in 0..3, got \[0, 4\]"),
    (Placement, {"cpu_threads": 0}, "placement", "placement.cpu_threads must be a positive integer"),
    (DataSettings, {"root": ""}, "data", "data.root must be a folder path"),
    (InferenceConfig, {"max_batch": 0}, "inference", "inference: need tolerance >= 0 and positive max_batch"),
])
def test_each_problem_is_one_error_naming_the_key(cls: type, values: dict, key: str, message: str) -> None:
    with pytest.raises(FsdError, match=message):
        build(cls, values, key)


@pytest.mark.parametrize(("values", "message"), [
    ({"family": "cnn"}, "models.T.family must be resnet or envnet"),
    ({"family": "resnet", "activation": "tanh"}, "models.T.activation must be sigmoid or softmax"),
    ({"family": "resnet", "pad_mode": "reflect"}, "models.T.pad_mode must be zero or loop"),
    ({"family": "resnet", "optimizer": "rmsprop"}, "models.T.optimizer must be adam or sgd"),
    ({"family": "resnet", "loss_reduction": "sum"}, "models.T.loss_reduction must be authors or row_sum"),
    ({"family": "resnet", "tta_pads": [8, -4]}, r"models.T.tta_pads must be >= 0, got \(8, -4\)"),
    ({"family": "resnet", "augment": {"freq_mask_mode": "wide"}}, "models.T.augment.freq_mask_mode must be paper or"),
    ({"family": "envnet", "augment": {"mixup_mode": "cutmix"}}, "models.T.augment.mixup_mode must be linear or bc"),
    ({"family": "envnet", "augment": {"freq_mask": True}}, r"models.T: augment: unknown keys \['freq_mask'\]"),
])
def test_a_model_choice_is_checked_when_its_spec_is_built(values: dict, message: str) -> None:
    with pytest.raises(FsdError, match=message):
        model_spec(values, "T")


def test_a_stage_reading_a_bad_params_file_names_the_file(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["spl"]["select"] = "best"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(FsdError, match=f"{path}: spl.select must be fixed or cv, got 'best'"):
        Params.load(path).read(SplSettings, "spl")
    with pytest.raises(FsdError, match="missing params section 'models.Z'"):
        Params.load(path).read(ModelSpec, "models.Z")


def _calls_of(name: str) -> set[str]:
    """The fsdlib files that call `name`."""
    found = set()
    for path in (ROOT / "fsdlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                found.add(str(path.relative_to(ROOT)))
    return found


def test_choices_are_checked_only_where_settings_are_built() -> None:
    # params sections (settings.py), a model's section (spec.py) and its `augment` (augment_settings.py);
    # tags.py checks `fsd tag --format`, a command-line choice
    assert _calls_of("check_choice") == {"fsdlib/settings.py", "fsdlib/spec.py", "fsdlib/augment_settings.py",
                                         "fsdlib/tags.py"}


def _import_graph() -> dict[str, set[str]]:
    """fsdlib's modules and the fsdlib modules each imports (at the top or inside functions; not TYPE_CHECKING)."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "fsdlib").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_the_library_has_no_import_cycle() -> None:
    graph = _import_graph()
    assert "fsdlib.settings" in graph["fsdlib.spec"] and "fsdlib.families" in graph["fsdlib.models"]  # the graph is read
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join((*path[path.index(module):], module))}")
        if module not in done:
            for dep in sorted(graph[module]):
                visit(dep, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())
