"""Helpers for end-to-end tests: a copy of the repository with tiny params, and running DVC in it."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from fsdlib.dvc_yaml import stage_lists

REPO = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "fsdlib", "stages", "params/paper_results.yaml", ".dvc/config", ".dvcignore", ".gitignore")

TINY_RESNET = {"crop": 32, "batch": 8, "cycles": 1, "epochs_per_cycle": 1, "tta_pads": [4],
               "arch": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}}
TINY_ENVNET = {"crop": 22050, "batch": 8, "cycles": 1, "epochs_per_cycle": 1, "tta_pads": [],
               "snapshot_cycles": None, "arch": {"width": 0.125, "hidden": 16}}


ABLATIONS = ("A_1cycle_noaug", "A_1cycle", "A_nomtl", "A_loop")
SWITCHES = ("noisy_loss", "curated_loss")  # model keys, and augment keys below, of the authors' switches
AUGMENT_SWITCHES = ("additional_crop_mode", "freq_mask_mode", "mixup_mode")


def authors_switches() -> dict[str, dict]:
    """Per model, the switches params/authors.yaml sets away from params/paper.yaml (docs/method.md §15), as a
    partial model section; the sizes it also changes (batch, weights) are left out."""
    paper, authors = (yaml.safe_load((REPO / "params" / f"{n}.yaml").read_text())["models"] for n in ("paper", "authors"))
    out: dict[str, dict] = {}
    for name, spec in authors.items():
        mine = {k: spec[k] for k in SWITCHES if k in spec and spec[k] != paper[name].get(k)}
        augment = {k: spec["augment"][k] for k in AUGMENT_SWITCHES
                   if k in spec.get("augment", {}) and spec["augment"][k] != paper[name]["augment"].get(k)}
        if augment:
            mine["augment"] = augment
        if mine:
            out[name] = mine
    return out


def tiny_params() -> dict:
    """The repository's params.yaml shrunk to seconds per stage: 4 classes, 2 folds, one epoch per model (per cycle
    of model A, which trains two), with the switches of params/authors.yaml, so that `dvc repro` runs the authors'
    code paths end to end (the defaults run in the demo and in the unit tests)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    paper_weights = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())["ensemble"]["weights"]
    for name, spec in params.pop("more_models", {}).items():  # every model of the method runs here
        if name not in ABLATIONS:  # Table 1's ablations of A: left out, so their report rows print "not run"
            params["models"][name] = spec
            params["ensemble"]["weights"][name] = paper_weights[name]
    params["synth"].update(n_classes=4, n_curated=24, n_noisy=24, n_test=12, curated_duration=[0.3, 1.5],
                           noisy_duration=[1.0, 1.5], test_duration=[0.3, 1.5])
    params["folds"].update(n_folds=2, ids=[0, 1])
    for spec in params["models"].values():
        spec.update(TINY_RESNET if spec["family"] == "resnet" else TINY_ENVNET)
        if spec.get("crops"):
            spec["crops"] = [16, 32]
    params["models"]["A"]["cycles"] = 2  # snapshots to choose among, for the teacher and the ensemble
    for name, switches in authors_switches().items():  # the pipeline runs the authors' code paths (params/authors.yaml)
        if name in params["models"]:
            spec = params["models"][name]
            spec.update({k: v for k, v in switches.items() if k != "augment"})
            spec["augment"] = {**spec.get("augment", {}), **switches.get("augment", {})}
    params["distill"]["model"].update(TINY_RESNET)
    for name in set(ABLATIONS) & set(params["models"]):
        del params["models"][name], params["ensemble"]["weights"][name]
    params["stage_models"] = stage_lists(params["models"], params["ensemble"]["weights"])
    return params


def make_repo(dest: Path, params: dict | None = None) -> Path:
    """Copy the pipeline's code and config into `dest`, with tiny params, as a fresh git + DVC repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny pipeline"], cwd=dest, check=True)
    return dest


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a built repository (git, DVC cache and outputs), to change without touching the original."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def env(first: Path | None = None) -> dict[str, str]:
    """The environment with this interpreter's scripts (fsd, dvc) first on PATH, after the folder `first` if given."""
    out = dict(os.environ)
    folders = [*([str(first)] if first else []), str(Path(sys.executable).parent)]
    out["PATH"] = os.pathsep.join([*folders, out.get("PATH", "")])
    out["DVC_NO_ANALYTICS"] = "1"
    return out


def run(args: list[str], cwd: Path, check: bool = True, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command in the repository copy, capturing output; fail with the output on error. `path_first`: a
    folder of executables found before every other (and before this interpreter's fsd and dvc)."""
    proc = subprocess.run(args, cwd=cwd, env=env(path_first), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran(output: subprocess.CompletedProcess | str) -> list[str]:
    """The names of the stages a `dvc repro` or `dvc exp run` ran (with --dry: would run), in turn, from its output
    (or from a log of it)."""
    text = output if isinstance(output, str) else output.stdout + output.stderr
    return re.findall(r"Running stage '([^']+)'", text)


def repro(cwd: Path, *args: str) -> list[str]:
    """`dvc repro` and the names of the stages it ran. With "--dry": the stages whose own dependencies or params
    changed, which a repro would run first (not those after them, whose inputs only the run itself changes)."""
    return ran(run(["dvc", "repro", *args], cwd))


def load_script(name: str) -> ModuleType:
    """A script of scripts/ (e.g. "make_field_dataset") imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
