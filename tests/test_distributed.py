"""Data-parallel training under torchrun (2 processes, gloo on CPU) equals one process with the same batch."""

from pathlib import Path

import torch
from launch import alone, torchrun

SCRIPT = """
import os, sys
from datetime import timedelta
from pathlib import Path
import numpy as np
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_train import _store, _spec, TINY_ARCH
from fsdlib.batches import FoldData
from fsdlib.settings import InferenceConfig
from fsdlib.train import train_fold
root = Path(sys.argv[1])
interrupt = len(sys.argv) > 2  # stop after cycle 1, then resume: each rank with a state dir of its own
if "WORLD_SIZE" in os.environ:  # a short timeout: ranks that disagree fail the test rather than hang it
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank_dir = root / f"stores{{os.environ.get('RANK', '0')}}"
curated, y = _store(rank_dir / "curated.logmel.arrow", 48, seed=0)
noisy, ny = _store(rank_dir / "noisy.logmel.arrow", 48, seed=1, noisy=True)
data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)
arch = dict(TINY_ARCH, dropouts=[0.0, 0.0])  # dropout masks are drawn per rank: off for a bitwise comparison
spec = _spec(cycles=2, epochs_per_cycle=2, batch=12, optimizer="sgd", lr_max=0.05, lr_min=0.001, arch=arch)
state = root / (f"state{{os.environ.get('RANK', '0')}}" if interrupt else "state")  # no shared filesystem


def stop_once(cycle):
    if interrupt and not (root / "stopped").exists():
        (root / "stopped").touch()
        raise SystemExit(3)


try:
    train_fold(spec, data, 3, root / "out", state, InferenceConfig(), name="P", fold=0, device="cpu", progress=False,
               after_cycle=stop_once)
finally:  # the group this script joined, left before exit (fsdlib.distributed.leave_group)
    if dist.is_initialized():
        dist.destroy_process_group()
"""


def _assert_same_snapshots(a_dir: Path, b_dir: Path) -> None:
    for cycle in (1, 2):
        a = torch.load(a_dir / f"snapshot_{cycle}.pt")
        b = torch.load(b_dir / f"snapshot_{cycle}.pt")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5, rtol=1e-4), (cycle, key)


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    """Then an interrupted run resumes where each rank has its own state dir (no shared filesystem): rank 0's
    resume state reaches every rank before DistributedDataParallel broadcasts the weights."""
    script = tmp_path / "ddp_tiny.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    single = alone(script, str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    ddp = torchrun(script, str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    _assert_same_snapshots(tmp_path / "single" / "out", tmp_path / "ddp" / "out")

    stopped = torchrun(script, str(tmp_path / "resumed"), "interrupt")
    assert stopped.returncode != 0 and (tmp_path / "resumed" / "state0" / "snapshot_1.pt").is_file()
    assert not (tmp_path / "resumed" / "state1").exists()
    resumed = torchrun(script, str(tmp_path / "resumed"), "interrupt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_snapshots(tmp_path / "ddp" / "out", tmp_path / "resumed" / "out")
