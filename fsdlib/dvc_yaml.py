"""dvc.yaml generated, not hand-kept: code deps from each command's imports, the rest from the table below.

Each stage's code deps are the first-party files its command module (stages/cli.py's COMMANDS) imports, transitively:
an edit elsewhere reruns nothing, an edit to one of them reruns the stage. Data deps, params, outs, metrics and plots
are declared once in STAGES. The matrix stages run over params.yaml's `stage_models` lists (`${stage_models.<stage>}`,
so one dvc.yaml serves params.yaml and params/paper.yaml); those lists are checked here against `models` (init_from,
spl) and `ensemble.weights`; the top-level training-curve plots follow params.yaml's weights. Torch-free.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fsdlib.errors import FsdError

DVC_YAML = "dvc.yaml"
PARAMS_FILES = ("params.yaml", "params/paper.yaml", "params/authors.yaml")  # run_pipeline.sh copies one over the first
CLI = "stages/cli.py"  # the dispatcher: it imports each command only by name, and cannot change an output
FIRST_PARTY = ("fsdlib", "stages")
COMMENT_COLUMN = 34


@dataclass(frozen=True)
class Out:
    """An output (or metrics/plots file): `cache: false` keeps it in git; `options` are plot settings."""

    path: str
    cache: bool = True
    comment: str = ""
    options: tuple[tuple[str, str], ...] = ()


def kept(path: str, comment: str = "", **options: str) -> Out:
    """A small output kept in git rather than the DVC cache."""
    return Out(path, cache=False, comment=comment, options=tuple(options.items()))


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage apart from its code deps. `trains`: for a train stage, the (init_from, has spl) of its
    models, which decides the stage_models list a model belongs in; a matrix stage runs over stage_models[name]."""

    name: str
    cmd: str
    comment: str = ""
    matrix: bool = False
    data: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()
    metrics: tuple[Out, ...] = ()
    plots: tuple[Out, ...] = ()
    trains: tuple[str | None, bool] | None = None


def outs(*paths: str | Out) -> tuple[Out, ...]:
    """Outputs from plain paths (cached) and Out entries."""
    return tuple(p if isinstance(p, Out) else Out(p) for p in paths)


TRAINING = ("data/features", "data/folds.parquet")
PSEUDO_LABELS = ("data/pseudo/all_folds.parquet", "data/pseudo/leak_free.parquet")  # spl.variant names one of them
TRAIN_PARAMS = ("models.${item.model}", "folds.ids", "inference", "placement")


def train(name: str, comment: str, init_from: str | None = None, spl: bool = False) -> Stage:
    """A train stage: every fold of one model per matrix item."""
    data = TRAINING + ((f"data/models/{init_from}",) if init_from else ()) + (PSEUDO_LABELS if spl else ())
    return Stage(name, "fsd train ${item.model}", comment, matrix=True, data=data, params=TRAIN_PARAMS,
                 outs=outs("data/models/${item.model}"), trains=(init_from, spl))


STAGES = (
    Stage("synth", "fsd synth", params=("synth",), outs=outs("data/demo")),
    Stage("features", "fsd features", data=("${data.root}",), params=("data.root", "features"),
          outs=outs("data/features")),
    Stage("folds", "fsd folds", data=("${data.root}",),
          params=("data.root", "folds.n_folds", "folds.seed", "folds.method"), outs=outs("data/folds.parquet")),
    train("train", "models trained from scratch"),
    train("train_from_pre", "models initialised from the EnvNet pretraining run (init_from: pre)", init_from="pre"),
    Stage("teacher", "fsd teacher", "the teacher (spl.teacher) predicts every noisy clip, per fold",
          data=("data/features", "data/models/${spl.teacher}"),
          params=("spl.teacher", "spl.select", "folds.ids", "inference", "models.${spl.teacher}"),
          outs=outs("data/pseudo/teacher.npz")),
    Stage("pseudo_label", "fsd pseudo-label", "sharpened soft labels, both variants (all_folds, leak_free)",
          data=("data/pseudo/teacher.npz",), params=("spl.temperature",), outs=outs(*PSEUDO_LABELS)),
    train("train_student", "model B (MTL + SPL), initialised from A, one per pseudo-label variant", init_from="A",
          spl=True),
    Stage("predict", "fsd predict ${item.model}", "test and OOF predictions: folds x snapshots x padding TTA",
          matrix=True, data=TRAINING + ("data/models/${item.model}",),
          params=("models.${item.model}", "folds.ids", "inference"), outs=outs("data/predictions/${item.model}.npz")),
    Stage("ensemble", "fsd ensemble", data=("data/features/labels.parquet", "data/predictions", "data/models"),
          params=("ensemble",),
          outs=outs("data/submission.csv", "data/ensemble.json",
                    kept("metrics/per_class.json", "per-class lwlrap: `dvc metrics show metrics/per_class.json`"),
                    kept("metrics/selection.json",
                         "per model: the snapshot cycles and pads chosen, CV chosen / nested / all, test")),
          metrics=(kept("metrics/metrics.json",
                        "one aggregated file, so `dvc exp show` and `dvc metrics show` stay readable"),),
          plots=(kept("metrics/per_class_cv.csv", template="bar_horizontal", x="lwlrap", y="class"),
                 kept("metrics/cv_per_model.png"), kept("metrics/per_class.png"), kept("metrics/training_curves.png"))),
    Stage("report", "fsd report", "the paper's Tables 1-3 beside ours (params/paper_results.yaml), from predictions",
          data=("params/paper_results.yaml", "data/features/labels.parquet", "data/predictions"),
          params=("stage_models.predict",), outs=(kept("metrics/paper_tables.md"), kept("metrics/paper_tables.json"))),
    Stage("export", "fsd export", "the submitted ensemble (torch file, ONNX graph), for `fsd tag --model` anywhere",
          data=("data/features/labels.parquet", "data/ensemble.json", "data/models"),
          params=("models", "features", "inference", "folds.ids"),
          outs=outs("data/tagger.pt", "data/tagger.onnx", "data/tagger.onnx.data")),
    Stage("distill", "fsd distill",
          "one fast network trained on the ensemble's predictions, exported like the ensemble",
          data=TRAINING + ("data/tagger.pt", "data/tagger.onnx", "data/tagger.onnx.data"), params=("distill",),
          outs=outs("data/distill", "data/tagger_distilled.pt", "data/tagger_distilled.onnx"),
          metrics=(kept("metrics/distill.json"),)),
)


# --- code deps: the import graph ---------------------------------------------------------------------------------

def commands(root: Path) -> dict[str, str]:
    """stages/cli.py's COMMANDS table (subcommand -> 'module:function'), read without importing it."""
    tree = ast.parse((root / CLI).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMMANDS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise FsdError("no COMMANDS table", root / CLI)


def imported_modules(path: Path, package: str) -> set[str]:
    """First-party module names a source file imports anywhere in it (lazy imports too); `package`: its own."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        found.update(n for n in names if n.split(".")[0] in FIRST_PARTY)
    return found


def module_file(root: Path, name: str) -> Path | None:
    """The source file of a first-party module name, or None when the name is a function or class."""
    base = root / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_deps(root: Path, module: str, parsed: dict[Path, set[str]] | None = None) -> list[str]:
    """Every first-party file `module` imports, transitively, itself included (importing a.b.c runs a/__init__.py
    and a/b/__init__.py too), sorted; empty files (an empty __init__.py) and the dispatcher are left out. `parsed`:
    each file's imports, kept across calls."""
    parsed = {} if parsed is None else parsed
    start = module_file(root, module)
    if start is None:
        raise FsdError(f"module {module} not found", root / CLI)
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path not in parsed:
            parsed[path] = imported_modules(path, ".".join(path.relative_to(root).parts[:-1]))
        for name in parsed[path]:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                file = module_file(root, ".".join(parts[:end]))
                if file is not None and (end == len(parts) or file.name == "__init__.py"):
                    todo.append(file)
    files = {p.relative_to(root).as_posix() for p in seen if p.stat().st_size > 0}
    return sorted(files - {CLI})


def stage_module(root: Path, cmd: str, table: dict[str, str] | None = None) -> str:
    """The module that runs `fsd <subcommand> ...` (`table`: the COMMANDS table, if already read)."""
    table = commands(root) if table is None else table
    sub = cmd.split()[1]
    if sub not in table:
        raise FsdError(f"no command {sub!r} in COMMANDS (a stage of fsdlib/dvc_yaml.py runs it)", root / CLI)
    return table[sub].split(":")[0]


# --- model lists: stage_models, models and ensemble.weights agree ------------------------------------------------

def train_groups() -> dict[tuple[str | None, bool], str]:
    """The train stage of each kind of model: (init_from, whether it learns soft pseudo labels) -> stage name."""
    return {s.trains: s.name for s in STAGES if s.matrix and s.trains is not None}


def stage_lists(models: dict[str, Any], weights: dict[str, Any]) -> dict[str, list[str]]:
    """The `stage_models` lists that `models` (init_from, spl) and `ensemble.weights` make: each model in the
    train stage of its kind, every weighed model predicted (weight 0: reported only)."""
    lists: dict[str, list[str]] = {s.name: [] for s in STAGES if s.matrix}
    lists["predict"] = list(weights)
    groups = train_groups()
    for model, spec in models.items():
        key = (spec.get("init_from"), bool(spec.get("spl")))
        if key in groups:
            lists[groups[key]].append(model)
    return lists


def model_problems(params: dict[str, Any]) -> list[str]:
    """Where a params file's stage_models lists disagree with its models (init_from, spl) and ensemble weights."""
    models, lists = params.get("models") or {}, params.get("stage_models") or {}
    weights = (params.get("ensemble") or {}).get("weights") or {}
    problems = [f"stage_models.{k}: no such matrix stage in dvc.yaml" for k in lists
                if k not in {s.name for s in STAGES if s.matrix}]
    wanted, groups = stage_lists(models, weights), train_groups()
    for model, spec in models.items():
        key = (spec.get("init_from"), bool(spec.get("spl")))
        if key not in groups:
            problems.append(f"models.{model}: no train stage trains a model with init_from {key[0]}, spl {key[1]} "
                            f"(stages: {', '.join(f'{g}: init_from {i}, spl {s}' for (i, s), g in groups.items())})")
        variant = (spec.get("spl") or {}).get("variant")
        if variant is not None and f"data/pseudo/{variant}.parquet" not in PSEUDO_LABELS:
            problems.append(f"models.{model}: spl.variant {variant} is not a pseudo_label output")
    problems += [f"ensemble.weights: {m} is not in models" for m in weights if m not in models]
    sources = {spec.get("init_from") for spec in models.values()}
    problems += [f"models.{m}: nothing uses it (not in ensemble.weights, no model's init_from)"
                 for m in models if m not in weights and m not in sources]
    for name, want in wanted.items():
        have = list(lists.get(name) or [])
        if sorted(have) != sorted(want):
            missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
            dupes = sorted({m for m in have if have.count(m) > 1})
            why = "; ".join(f"{label} {items}" for label, items in
                            (("missing", missing), ("should not list", extra), ("lists twice", dupes)) if items)
            problems.append(f"stage_models.{name}: {why} (models' init_from and spl, and ensemble.weights, make it "
                            f"[{', '.join(want)}])")
    teacher = (params.get("spl") or {}).get("teacher")
    if teacher not in models:
        problems.append(f"spl.teacher: {teacher} is not in models")
    return problems


def curve_plots(params: dict[str, Any]) -> tuple[int, list[str]]:
    """The first fold and the models whose training curves dvc.yaml plots: those the ensemble weighs above 0."""
    weights = (params.get("ensemble") or {}).get("weights") or {}
    return int(params["folds"]["ids"][0]), [m for m, w in weights.items() if w > 0]


def load_params(root: Path) -> dict[str, dict[str, Any]]:
    """Every params file that runs with this dvc.yaml (params.yaml first), checked; FsdError lists what is wrong."""
    loaded, problems = {}, []
    for name in PARAMS_FILES:
        if (root / name).is_file():
            loaded[name] = yaml.safe_load((root / name).read_text(encoding="utf-8"))
            problems += [f"{name}: {p}" for p in model_problems(loaded[name])]
    if PARAMS_FILES[0] not in loaded:
        raise FsdError("params file not found", root / PARAMS_FILES[0])
    fold, shown = curve_plots(loaded[PARAMS_FILES[0]])
    for name, other in loaded.items():  # dvc.yaml is one file for all: what it plots, each of them must train
        missing = [m for m in shown if m not in (other.get("models") or {})]
        if missing or int(other["folds"]["ids"][0]) != fold:
            problems.append(f"{name}: dvc.yaml plots fold {fold} of {shown} ({PARAMS_FILES[0]}'s models weighted "
                            f"above 0), but this file trains fold {other['folds']['ids'][0]} first and lacks {missing}")
    if problems:
        raise FsdError("the params files' model lists disagree with each other or with dvc.yaml's matrix stages "
                       "(fsdlib/dvc_yaml.py):\n  " + "\n  ".join(problems))
    return loaded


# --- rendering ---------------------------------------------------------------------------------------------------

def commented(line: str, comment: str) -> str:
    """`line` with its comment at COMMENT_COLUMN, as dvc.yaml has always aligned them."""
    return f"{line.ljust(COMMENT_COLUMN - 1)} # {comment}" if comment else line


def out_lines(key: str, items: tuple[Out, ...]) -> list[str]:
    """A stage's outs, metrics or plots section."""
    lines = [f"    {key}:"] if items else []
    for out in items:
        if out.cache and not out.options:
            lines.append(commented(f"      - {out.path}", out.comment))
            continue
        lines.append(commented(f"      - {out.path}:", out.comment))
        if not out.cache:
            lines.append("          cache: false")
        lines += [f"          {k}: {v}" for k, v in out.options]
    return lines


def stage_lines(root: Path, stage: Stage, parsed: dict[Path, set[str]], table: dict[str, str]) -> list[str]:
    """One stage: its matrix, cmd, code deps then data deps, params and outputs."""
    lines = [commented(f"  {stage.name}:", stage.comment)]
    if stage.matrix:
        lines += ["    matrix:", f"      model: ${{stage_models.{stage.name}}}"]
    lines += [f"    cmd: {stage.cmd}", "    deps:"]
    lines += [f"      - {d}" for d in code_deps(root, stage_module(root, stage.cmd, table), parsed) + list(stage.data)]
    if stage.params:
        lines += ["    params:"] + [f"      - {p}" for p in stage.params]
    return lines + out_lines("outs", stage.outs) + out_lines("metrics", stage.metrics) + out_lines("plots", stage.plots)


def render(root: Path) -> str:
    """The whole dvc.yaml for the repository at `root`."""
    fold, models = curve_plots(load_params(root)[PARAMS_FILES[0]])
    lines, parsed, table = ["stages:"], {}, commands(root)
    for stage in STAGES:
        lines += stage_lines(root, stage, parsed, table) + [""]
    lines.append(commented("plots:", f"training curves (dvclive), fold {fold} of each model weighed above 0"))
    lines += [f"  - data/models/{m}/fold{fold}/live/plots/metrics: {{x: step}}" for m in models]
    return "\n".join(lines) + "\n"


# --- comparing ---------------------------------------------------------------------------------------------------

def shown(item: Any) -> str:
    """A deps/params/outs entry as written: a path, or its mapping of options."""
    return item if isinstance(item, str) else repr(item)


def differences(current: str, generated: str, name: str = DVC_YAML) -> str:
    """What differs, stage by stage (deps, params, outs, ...), then the differing lines as a unified diff."""
    summary, new = [], yaml.safe_load(generated)
    try:
        old = yaml.safe_load(current)
    except yaml.YAMLError as exc:
        old, summary = {}, [f"{name} is not valid YAML ({exc})"]
    old = old if isinstance(old, dict) else {}
    old_stages, new_stages = old.get("stages") or {}, new.get("stages") or {}
    for stage in [*new_stages, *(s for s in old_stages if s not in new_stages)]:
        a, b = old_stages.get(stage), new_stages.get(stage)
        if a is None or b is None:
            summary.append(f"stage {stage}: {'missing' if a is None else 'not generated'}")
            continue
        for key in dict.fromkeys([*b, *a]):
            x, y = a.get(key), b.get(key)
            if isinstance(x, list | None) and isinstance(y, list | None):  # an empty section loads as None
                x, y = x or [], y or []
                missing, extra = [shown(v) for v in y if v not in x], [shown(v) for v in x if v not in y]
                if missing:
                    summary.append(f"stage {stage}: {key}: {name} lacks {', '.join(missing)}")
                if extra:
                    summary.append(f"stage {stage}: {key}: {name} has {', '.join(extra)}, which is not generated"
                                   + (" (not imported)" if key == "deps" else ""))
            elif x != y:
                summary.append(f"stage {stage}: {key}: {x!r}, generated {y!r}")
    if old.get("plots") != new.get("plots"):
        summary.append(f"plots: {old.get('plots')!r}, generated {new.get('plots')!r}")
    diff = difflib.unified_diff(current.splitlines(), generated.splitlines(), f"{name} (current)",
                                f"{name} (generated)", lineterm="")
    return "\n".join(summary + (["(comments or layout only)"] if not summary else []) + list(diff))
