"""params/paper.yaml holds the paper's exact settings (docs/method.md §7) and builds the full-size networks."""

from pathlib import Path

import pytest
import yaml

from fsdlib.models import build_network
from fsdlib.spec import model_spec

PAPER = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "paper.yaml").read_text())
DEMO = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())

# docs/method.md §7: family, activation, cycles x epochs, crop, batch, optimiser, lr, init, SPL, cycles used, pads
TABLE = {
    "A": ("resnet", "sigmoid", 8, 64, 512, 64, "adam", 1e-3, None, None, [1, 2, 3, 4, 5, 6, 7, 8], [8, 32]),
    "B": ("resnet", "sigmoid", 7, 64, 512, 32, "adam", 1e-3, "A", "all_folds", [1, 2, 3, 4, 5, 6, 7], [8, 32]),
    "C": ("resnet", "sigmoid", 6, 64, 1024, 64, "adam", 1e-3, None, None, [1, 2, 3, 4, 5, 6], [8, 32]),
    "pre": ("envnet", "softmax", 1, 400, 133_300, 16, "sgd", 0.1, None, None, None, []),
    "D": ("envnet", "sigmoid", 3, 80, 133_300, 64, "sgd", 0.1, "pre", None, [1, 2, 3], [8000, 32000]),
    "E": ("envnet", "softmax", 5, 80, 133_300, 16, "sgd", 0.1, "pre", None, [1, 2, 3, 4, 5], [8000, 32000]),
    "F": ("envnet", "softmax", 10, 80, 200_000, 16, "sgd", 0.1, None, None, [5, 6, 7, 8, 9, 10], [8000, 32000]),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_paper_settings(name: str) -> None:
    family, act, cycles, epochs, crop, batch, opt, lr_max, init, spl, used, pads = TABLE[name]
    spec = model_spec(PAPER["models"][name], name)  # checks every setting
    assert (spec.family, spec.activation, spec.cycles, spec.epochs_per_cycle) == (family, act, cycles, epochs)
    assert (spec.crop, spec.batch, spec.optimizer, spec.lr_max, spec.lr_min) == (crop, batch, opt, lr_max, 1e-6)
    assert spec.init_from == init and spec.multitask
    assert spec.spl_variant == spl and (spl is None or spec.spl_weight == 20.0)
    assert (list(spec.snapshot_cycles) if spec.snapshot_cycles else None) == used
    assert list(spec.tta_pads) == pads
    if family == "resnet":
        aug = spec.augment_config()
        assert aug.mixup and aug.gain and aug.freq_mask and aug.additional_crop == (name == "B")


def test_paper_networks_are_full_size() -> None:
    resnet = build_network(model_spec(PAPER["models"]["A"], "A"), 80)
    assert sum(p.numel() for p in resnet.backbone.parameters()) == 21_278_400  # ResNet34, one input channel
    envnet = build_network(model_spec(PAPER["models"]["D"], "D"), 80)
    assert envnet.backbone.out_features == 2560
    assert envnet.heads.curated[0].out_features == 1024 and envnet.heads.noisy is not None


# Table 1's ablations of A (reported, weight 0): cycles x epochs, multitask, augmentation, padding
ABLATIONS = {"A_1cycle_noaug": (1, 512, False, False, "zero"), "A_1cycle": (1, 512, False, True, "zero"),
             "A_nomtl": (8, 64, False, True, "zero"), "A_loop": (8, 64, True, True, "loop")}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_paper_ablations_differ_from_a_in_their_own_setting_only(name: str) -> None:
    cycles, epochs, multitask, augmented, pad_mode = ABLATIONS[name]
    spec, a = model_spec(PAPER["models"][name], name), model_spec(PAPER["models"]["A"], "A")
    assert (spec.cycles, spec.epochs_per_cycle, spec.multitask, spec.pad_mode) == (cycles, epochs, multitask, pad_mode)
    aug = spec.augment_config()
    assert (aug.mixup, aug.gain, aug.freq_mask) == (augmented,) * 3
    assert (spec.crop, spec.batch, spec.arch, spec.lr_max, spec.optimizer) == (a.crop, a.batch, a.arch, a.lr_max,
                                                                               a.optimizer)
    assert list(spec.snapshot_cycles) == list(range(1, cycles + 1)) and spec.tta_pads == a.tta_pads


def test_paper_ensemble_features_and_folds() -> None:
    assert PAPER["ensemble"]["weights"] == {"A": 3, "B": 4, "C": 3, "D": 1, "E": 1, "F": 1, "B_leak_free": 0,
                                            "A_crops": 0, "pre": 0, **{m: 0 for m in ABLATIONS}}
    assert PAPER["folds"]["n_folds"] == 5 and PAPER["folds"]["ids"] == [0, 1, 2, 3, 4]
    assert PAPER["features"] == {"sample_rate": 44100, "n_mels": 128, "n_fft": 2560, "hop_length": 347,
                                 "fmin": 20.0, "fmax": 22050.0, "batch_seconds": 60.0,
                                 "wave_store": "reference"}
    assert PAPER["spl"] == {"teacher": "A", "temperature": 2.0, "select": "fixed"}
    assert PAPER["ensemble"]["submit"] == "fixed" and PAPER["ensemble"]["select"] == "fixed"


def test_paper_and_demo_have_the_same_layout() -> None:
    """The demo trains a subset of the paper's models; the rest wait in `more_models`, each with the same keys."""
    every = {**DEMO["models"], **DEMO["more_models"]}
    assert PAPER.keys() == DEMO.keys() - {"more_models"} and PAPER["models"].keys() == every.keys()
    assert not DEMO["models"].keys() & DEMO["more_models"].keys()
    for name, spec in PAPER["models"].items():  # as merged from model_defaults
        # the demo may start a model from another's weights where the paper trains it from scratch (F)
        assert spec.keys() - {"init_from"} == every[name].keys() - {"init_from"}, name
    assert PAPER["stage_models"].keys() == DEMO["stage_models"].keys()  # the same dvc.yaml stages
    assert set(DEMO["stage_models"]["predict"]) == DEMO["models"].keys()
    assert set(DEMO["stage_models"]["predict"]) <= set(PAPER["stage_models"]["predict"])
    assert PAPER["model_defaults"].keys() == DEMO["model_defaults"].keys()
    assert DEMO["ensemble"]["weights"].keys() == DEMO["models"].keys()
    assert {m: w for m, w in PAPER["ensemble"]["weights"].items() if m in DEMO["models"]} == DEMO["ensemble"]["weights"]


@pytest.mark.parametrize("name", list(PAPER["models"]))
def test_paper_models_train_with_the_authors_dynamics(name: str) -> None:
    """docs/method.md §11: per-batch-x-class KL, a forward pass per part, Nesterov SGD, the authors' wave augments."""
    spec = model_spec(PAPER["models"][name], name)
    assert spec.loss_reduction == "authors" and spec.separate_passes is True
    if spec.family == "envnet":
        aug = spec.augment_config()
        assert spec.optimizer == "sgd" and spec.nesterov is True
        assert (aug.order, aug.mixup_mode, aug.p) == ("authors", "bc", 1.0)
        assert aug.mixup and aug.time_scale and aug.gain and aug.scales_on_loader
    for family in ("resnet", "envnet"):  # stated in the defaults, not left to ModelSpec's
        assert {"loss_reduction", "separate_passes"} <= PAPER["model_defaults"][family].keys()
    assert PAPER["model_defaults"]["envnet"]["nesterov"] is True
