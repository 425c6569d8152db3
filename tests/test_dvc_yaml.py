"""dvc.yaml agrees with the models of params.yaml and params/paper.yaml, as DVC itself resolves the stages.

Each params file is resolved the way `dvc repro` sees it: copied as params.yaml beside dvc.yaml in a fresh DVC repository
(run_pipeline.sh --paper copies params/paper.yaml over params.yaml). A model added, renamed or rewired in one place only
fails here.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

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
    models, weights = pipeline.params["models"], pipeline.params["ensemble"]["weights"]
    shown = set()
    for path in pipeline.plots:
        match = re.fullmatch(r"data/models/(?P<model>[^/]+)/fold(?P<fold>\d+)/live/plots/metrics", path)
        assert match and match["model"] in models and int(match["fold"]) in pipeline.params["folds"]["ids"], path
        shown.add(match["model"])
    assert shown == {m for m, w in weights.items() if w > 0}


def imported_modules(path: Path) -> set[str]:
    """First-party modules a source file imports (anywhere in it, lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n.split(".")[0] in ("fsdlib", "stages"))
    return found


def module_file(name: str) -> Path | None:
    """The source file of a first-party module name, or None when it names a function or class."""
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_closure(start: Path) -> set[str]:
    """Every first-party source file `start` imports, transitively, as repository-relative paths."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            file = module_file(name)
            if file is not None:
                todo.append(file)
            for parent in range(1, name.count(".") + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
                init = module_file(".".join(name.split(".")[:parent]))
                if init is not None and init.name == "__init__.py":
                    todo.append(init)
    return {p.relative_to(ROOT).as_posix() for p in seen if p.stat().st_size > 0}


def stage_module(cmd: str) -> Path:
    """The stages/ module that runs an `fsd <subcommand>` command (from stages/cli.py's table)."""
    tree = ast.parse((ROOT / "stages" / "cli.py").read_text(encoding="utf-8"))
    table = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMMANDS" for t in node.targets))
    module = table[cmd.split()[1]].split(":")[0]
    return ROOT / (module.replace(".", "/") + ".py")


def test_code_deps_are_exactly_what_each_stage_imports(pipeline: Pipeline) -> None:
    """A stage's code deps are the files its command imports: an edit elsewhere reruns nothing, and no
    imported file is missing (so an edit to it cannot leave a stale output)."""
    ignored = {"stages/cli.py"}  # the dispatcher: changes to it cannot change outputs
    for name, stage in pipeline.stages.items():
        declared = {d for d in stage.deps if d.endswith(".py")}
        expected = code_closure(stage_module(stage.cmd)) - ignored
        assert declared == expected, (f"{name}: missing {sorted(expected - declared)}, "
                                      f"not imported {sorted(declared - expected)}")
