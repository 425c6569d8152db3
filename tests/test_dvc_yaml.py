"""dvc.yaml agrees with the models of params.yaml and params/paper.yaml, as DVC itself resolves the stages.

Each params file is resolved the way `dvc repro` sees it: copied as params.yaml beside dvc.yaml in a fresh DVC repository
(run_pipeline.sh --paper copies params/paper.yaml over params.yaml). A model added, renamed or rewired in one place only
fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from fsdlib.dvc_yaml import code_deps, render, stage_module
from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = ("params.yaml", "params/paper.yaml")
TRAIN_OUT = re.compile(r"data/models/(?P<model>[^/]+)")
PREDICT_OUT = re.compile(r"data/predictions/(?P<model>[^/]+)\.npz")


@dataclass(frozen=True)
class Stage:
    """One resolved stage: its group (the name before @), command, dependency paths, params keys and outputs."""

    group: str
    cmd: str
    deps: frozenset[str]
    params: frozenset[str]
    outs: tuple[str, ...]


@dataclass(frozen=True)
class Pipeline:
    """The resolved stages of dvc.yaml, its top-level plots, and the params file they were resolved against."""

    stages: dict[str, Stage]
    plots: list[str]
    params: dict


def resolve(dest: Path, params_file: str) -> Pipeline:
    """dvc.yaml resolved by DVC against `params_file` in a fresh repository at `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    shutil.copy(ROOT / params_file, dest / "params.yaml")
    Repo.init(str(dest), no_scm=True).close()
    stages = {}
    with Repo(str(dest)) as repo:
        for stage in repo.index.stages:
            params = {f"{dep.def_path}:{key}" for dep in stage.deps if isinstance(dep, ParamsDependency)
                      for key in dep.params}
            deps = {dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)}
            outs = tuple(out.def_path for out in stage.outs)
            stages[stage.name] = Stage(stage.name.split("@")[0], stage.cmd, frozenset(deps), frozenset(params), outs)
    plots = [next(iter(entry)) for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    return Pipeline(stages, plots, yaml.safe_load((ROOT / params_file).read_text()))


@pytest.fixture(scope="module", params=PARAMS_FILES)
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return resolve(tmp_path_factory.mktemp("dvc"), request.param)


def trained(pipeline: Pipeline) -> dict[str, Stage]:
    """The train stages by model, from their outputs (all of a model's folds in one stage); a model trained twice
    fails."""
    out: dict[str, Stage] = {}
    for name, stage in pipeline.stages.items():
        for path in stage.outs:
            match = TRAIN_OUT.fullmatch(path)
            if match:
                model = match["model"]
                assert model not in out, f"{model} trained by two stages"
                out[model] = stage
                assert stage.cmd == f"fsd train {model}", name
    return out


def test_every_model_trained_once(pipeline: Pipeline) -> None:
    models = pipeline.params["models"]
    assert set(trained(pipeline)) == set(models)
    lists = pipeline.params["stage_models"]
    listed = [m for group in ("train", "train_from_pre", "train_student") for m in lists[group]]
    assert sorted(listed) == sorted(models)  # each model in exactly one train stage's list


def test_train_stages_track_their_model_folds_and_placement(pipeline: Pipeline) -> None:
    for model, stage in trained(pipeline).items():
        assert stage.group.startswith("train"), stage
        wanted = {f"params.yaml:{key}" for key in (f"models.{model}", "folds.ids", "inference", "placement")}
        assert wanted <= stage.params, (model, wanted - stage.params)
        assert {"data/features", "data/folds.parquet"} <= stage.deps, model


def test_init_from_is_a_dependency(pipeline: Pipeline) -> None:
    models = pipeline.params["models"]
    for model, stage in trained(pipeline).items():
        source = models[model].get("init_from")
        other_models = {d for d in stage.deps if d.startswith("data/models/")}
        assert other_models == ({f"data/models/{source}"} if source else set()), model
        if source:  # the snapshot must fit the architecture
            assert (models[source]["family"], models[source]["arch"]) == (models[model]["family"], models[model]["arch"])


def test_students_depend_on_their_pseudo_labels(pipeline: Pipeline) -> None:
    models = pipeline.params["models"]
    for model, stage in trained(pipeline).items():
        spl = models[model].get("spl")
        pseudo = {d for d in stage.deps if d.startswith("data/pseudo/")}
        if spl:
            assert stage.group == "train_student" and f"data/pseudo/{spl['variant']}.parquet" in pseudo, model
        else:
            assert stage.group != "train_student" and not pseudo, model


def test_teacher_is_spl_teacher(pipeline: Pipeline) -> None:
    teacher = pipeline.params["spl"]["teacher"]
    assert teacher in pipeline.params["models"]
    stage = pipeline.stages["teacher"]
    assert f"data/models/{teacher}" in stage.deps and f"params.yaml:models.{teacher}" in stage.params
    assert not {d for d in stage.deps if d.startswith("data/models/")} - {f"data/models/{teacher}"}


def test_predictions_cover_the_ensemble(pipeline: Pipeline) -> None:
    models, weights = pipeline.params["models"], pipeline.params["ensemble"]["weights"]
    predicted = {}
    for name, stage in pipeline.stages.items():
        for path in stage.outs:
            match = PREDICT_OUT.fullmatch(path)
            if match:
                model = match["model"]
                predicted[model] = stage
                assert stage.cmd == f"fsd predict {model}", name
                assert f"data/models/{model}" in stage.deps and f"params.yaml:models.{model}" in stage.params, name
    assert set(weights) <= set(models)
    assert set(predicted) == set(weights) == set(pipeline.params["stage_models"]["predict"])
    sources = {spec.get("init_from") for spec in models.values()}
    assert not [m for m in models if m not in predicted and m not in sources]  # a model nothing uses


def test_plots_name_the_weighted_models(pipeline: Pipeline) -> None:
    models = pipeline.params["models"]
    shown = set()
    for path in pipeline.plots:
        match = re.fullmatch(r"data/models/(?P<model>[^/]+)/fold(?P<fold>\d+)/live/plots/metrics", path)
        assert match and match["model"] in models and int(match["fold"]) in pipeline.params["folds"]["ids"], path
        shown.add(match["model"])
    demo = yaml.safe_load((ROOT / PARAMS_FILES[0]).read_text())["ensemble"]["weights"]
    assert shown == {m for m, w in demo.items() if w > 0}  # params.yaml's; the other files train them too


LOADED = ("import importlib, json, sys, pathlib; importlib.import_module(sys.argv[1]); root = pathlib.Path.cwd(); "
          "print(json.dumps(sorted(str(pathlib.Path(m.__file__).relative_to(root)) for m in list(sys.modules.values())"
          " if getattr(m, '__file__', None) and m.__name__.split('.')[0] in ('fsdlib', 'stages'))))")


def test_every_file_a_stage_loads_is_one_of_its_deps() -> None:
    """Independently of the generator's reading of imports: each stage module, imported in a fresh interpreter,
    loads only files its stage declares (an edit to any of them reruns the stage); every declared file exists."""
    by_module: dict[str, set[str]] = {}
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        declared = {d for d in stage["deps"] if d.endswith(".py")}
        assert all((ROOT / d).is_file() for d in declared), sorted(d for d in declared if not (ROOT / d).is_file())
        module = stage_module(ROOT, stage["cmd"])
        by_module[module] = by_module.get(module, declared) & declared  # a module's deps are the same in every stage
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(by_module, pool.map(lambda m: subprocess.run([sys.executable, "-c", LOADED, m], cwd=ROOT,
                                                                         capture_output=True, text=True, check=True),
                                            by_module), strict=True))
    for module, run in runs.items():
        loaded = {f for f in json.loads(run.stdout) if (ROOT / f).stat().st_size > 0}  # an empty __init__.py: no dep
        assert f"{module.replace('.', '/')}.py" in loaded  # the listing works
        assert loaded <= by_module[module], f"{module} loads undeclared {sorted(loaded - by_module[module])}"


# --- dvc.yaml is generated (`fsd dvc-yaml`): --check passes here and names the drift in a copy --------------------

def fsd_dvc_yaml(*args: str) -> Result:
    """`fsd dvc-yaml ARGS`, in-process through the CLI's COMMANDS table."""
    return CliRunner().invoke(app, ["dvc-yaml", *args])


def repo_copy(dest: Path) -> Path:
    """What the generator reads (code, params files, dvc.yaml), copied to `dest`."""
    for name in ("fsdlib", "stages"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "params").mkdir()
    for path in [ROOT / "dvc.yaml", ROOT / "params.yaml", *(ROOT / "params").glob("*.yaml")]:
        shutil.copy(path, dest / path.relative_to(ROOT))
    return dest


def edit_params(root: Path, edit: Callable[[dict], None], files: tuple[str, ...] = ("params.yaml",)) -> None:
    for name in files:
        params = yaml.safe_load((root / name).read_text())
        edit(params)
        (root / name).write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_yaml_is_what_the_generator_writes() -> None:
    result = fsd_dvc_yaml("--check", "--root", str(ROOT))
    assert result.exit_code == 0, result.output
    assert render(ROOT) == (ROOT / "dvc.yaml").read_text()


@pytest.mark.parametrize("drift, message", [
    (lambda text: text.replace("      - fsdlib/heap.py\n", "", 1), "stage synth: deps: dvc.yaml lacks fsdlib/heap.py"),
    (lambda text: text.replace("      - stages/folds.py\n", "      - stages/folds.py\n      - fsdlib/plots.py\n"),
     "stage folds: deps: dvc.yaml has fsdlib/plots.py, which is not generated (not imported)"),
    (lambda text: text.replace("      - models.${item.model}\n      - folds.ids\n      - inference\n    outs:\n"
                               "      - data/predictions", "      - folds.ids\n      - inference\n    outs:\n"
                               "      - data/predictions"), "stage predict: params: dvc.yaml lacks models.${item.model}"),
    (lambda text: text.replace("      - data/tagger.pt\n", "", 1), "stage export: outs: dvc.yaml lacks data/tagger.pt"),
])
def test_check_names_the_stage_whose_dvc_yaml_entry_drifted(tmp_path: Path, drift: Callable[[str], str],
                                                             message: str) -> None:
    root = repo_copy(tmp_path)
    text = (root / "dvc.yaml").read_text()
    (root / "dvc.yaml").write_text(drift(text))
    assert (root / "dvc.yaml").read_text() != text
    result = fsd_dvc_yaml("--check", "--root", str(root))
    assert result.exit_code == 1
    assert message in result.stderr and "fsd dvc-yaml --write" in result.stderr, result.stderr


def test_a_new_import_is_a_new_dep_once_written(tmp_path: Path) -> None:
    root = repo_copy(tmp_path)
    folds = root / "stages" / "folds.py"
    folds.write_text(folds.read_text() + "\n\ndef later() -> None:\n    from fsdlib import plots  # noqa: F401\n")
    result = fsd_dvc_yaml("--check", "--root", str(root))
    assert result.exit_code == 1 and "stage folds: deps: dvc.yaml lacks fsdlib/plots.py" in result.stderr, result.stderr
    assert "+      - fsdlib/plots.py" in result.stderr  # the differing line, as a unified diff
    mode = (root / "dvc.yaml").stat().st_mode
    assert fsd_dvc_yaml("--write", "--root", str(root)).exit_code == 0
    assert (root / "dvc.yaml").stat().st_mode == mode
    assert fsd_dvc_yaml("--check", "--root", str(root)).exit_code == 0
    old, new = (yaml.safe_load(p.read_text())["stages"] for p in (ROOT / "dvc.yaml", root / "dvc.yaml"))
    assert new["folds"]["deps"] == sorted([*old["folds"]["deps"][:-1], "fsdlib/plots.py"]) + ["${data.root}"]
    assert {k: v for k, v in new.items() if k != "folds"} == {k: v for k, v in old.items() if k != "folds"}


def add_model(params: dict) -> None:
    params["models"]["G"] = dict(params["models"]["A"])
    params["ensemble"]["weights"]["G"] = 0


def weigh_a_loop(params: dict) -> None:
    params["ensemble"]["weights"]["A_loop"] = 1


def weigh_new_model(params: dict) -> None:
    add_model(params)
    params["ensemble"]["weights"]["G"] = 1
    params["stage_models"]["train"].append("G")
    params["stage_models"]["predict"].append("G")


@pytest.mark.parametrize("edit, files, message", [
    (add_model, ("params.yaml",), "params.yaml: stage_models.train: missing ['G']"),
    (lambda p: p["stage_models"]["predict"].remove("pre"), ("params/paper.yaml",),
     "params/paper.yaml: stage_models.predict: missing ['pre']"),
    (lambda p: p["stage_models"]["train"].append("D"), ("params.yaml",),
     "params.yaml: stage_models.train: should not list ['D']"),
    (lambda p: p["models"]["C"].update(init_from="A"), ("params.yaml",),
     "params.yaml: models.C: no train stage trains a model with init_from A, spl False"),
    (lambda p: p["ensemble"]["weights"].pop("A_loop"), ("params.yaml",), "params.yaml: models.A_loop: nothing uses it"),
    (weigh_new_model, ("params.yaml",), "params/paper.yaml: dvc.yaml plots fold 0 of ['A', 'B', 'C', 'F', 'G']"),
    (weigh_a_loop, PARAMS_FILES + ("params/authors.yaml",), "plots: "),
])
def test_check_names_a_model_list_that_drifted(tmp_path: Path, edit: Callable[[dict], None], files: tuple[str, ...],
                                               message: str) -> None:
    root = repo_copy(tmp_path)
    edit_params(root, edit, files)
    result = fsd_dvc_yaml("--check", "--root", str(root))
    assert result.exit_code == 1 and message in result.stderr, result.stderr


def test_import_graph(tmp_path: Path) -> None:
    """Lazy, relative and package imports are followed; third-party ones, empty files and unused files are not."""
    files = {
        "stages/__init__.py": "",
        "stages/cli.py": "COMMANDS = {'s': 'stages.s:s'}\n",
        "stages/s.py": "import numpy\nimport fsdlib.a\nfrom fsdlib.pkg import d\n\ndef s():\n    from stages import t\n",
        "stages/t.py": "import stages.cli\n",
        "fsdlib/__init__.py": "'''the package'''\n",
        "fsdlib/a.py": "from fsdlib.b import f\n",
        "fsdlib/b.py": "def f():\n    from . import c\n",
        "fsdlib/c.py": "X = 1\n",
        "fsdlib/unused.py": "X = 2\n",
        "fsdlib/pkg/__init__.py": "",
        "fsdlib/pkg/d.py": "from ..c import X\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert stage_module(tmp_path, "fsd s x") == "stages.s"
    assert code_deps(tmp_path, "stages.s") == ["fsdlib/__init__.py", "fsdlib/a.py", "fsdlib/b.py", "fsdlib/c.py",
                                               "fsdlib/pkg/d.py", "stages/s.py", "stages/t.py"]
