"""benchmarks/bench_paper_scale.py on a tiny network: what it times, counts and projects."""

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_paper_scale as bench  # noqa: E402

from fsdlib.spec import ModelSpec  # noqa: E402

TINY = ModelSpec(family="resnet", crop=32, batch=4, arch={"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16},
                 augment={"mixup": True, "gain": True, "freq_mask": True, "additional_crop": False})
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return bench.temporary_data("logmel", 8, tmp_path_factory.mktemp("stores"), np.random.default_rng(0))


def test_steps_are_timed_alone_and_in_the_training_loop_with_their_flops(data) -> None:
    full = bench.measure_steps("T", TINY, data, CPU, warmup=1, steps=2, max_samples=0)
    assert full["measured"] == full["samples"] == 8  # curated and noisy parts of 4
    assert full["load"] > 0 and full["alone"] > 0 and full["step"] > 0
    assert full["loader_ok"] == (full["load"] <= full["alone"])
    # A capped step (2 samples a part) is scaled to the model's batch: FLOPs are linear in the batch.
    small = bench.measure_steps("T", TINY, data, CPU, warmup=0, steps=1, max_samples=4)
    assert small["measured"] == 4 and small["samples"] == 8 and small["spec"].batch == 2
    assert full["flops"] > 0 and small["flops"] == pytest.approx(full["flops"], rel=1e-9)


def test_peak_comes_from_the_argument_or_the_known_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bench.device_peak(CPU, None)[0] is None
    assert bench.device_peak(CPU, 2.5)[0] == 2.5
    cuda = torch.device("cuda", 0)
    for name, peak in [("NVIDIA H200", 790.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce GTX 1080", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, name=name: name)
        assert bench.device_peak(cuda, None)[0] == peak, name
    assert bench.device_peak(cuda, 100.0)[0] == 100.0
    assert bench.share(0.5e12, 1.0) == "50.0%" and bench.share(0.5e12, None) == ""


def test_folds_at_once_divide_the_training_hours_only() -> None:
    spec = replace(TINY, batch=64, cycles=2, epochs_per_cycle=3, tta_pads=(8, 32))
    one = bench.project("A", spec, {"step": 2.0}, rate=100.0, predicted=True, teacher="A")
    five = bench.project("A", spec, {"step": 2.0}, rate=100.0, predicted=True, teacher="A", gain=2.5)
    assert one["train_steps"] == 2 * 3 * (3976 // 64) * 5 and one["train_h"] == one["train_steps"] * 2.0 / 3600
    assert five["train_at_once_h"] == pytest.approx(one["train_h"] / 2.5) and one["train_at_once_h"] == one["train_h"]
    assert five["infer_h"] == one["infer_h"] and five["teacher_h"] > 0
    assert five["total_at_once_h"] == pytest.approx(five["train_at_once_h"] + five["infer_h"])


def test_a_crew_of_workers_trains_at_once(data) -> None:
    step = bench.measure_steps("T", TINY, data, CPU, warmup=1, steps=1, max_samples=0)
    crew = bench.Crew(2, 1, CPU)
    try:
        gain = bench.measure_gain("T", crew, step, data, steps=2)
    finally:
        crew.close()
    assert 0 < gain <= 2
    assert all(not proc.is_alive() for proc in crew.procs)
