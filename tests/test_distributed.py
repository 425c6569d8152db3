"""Data-parallel training under torchrun (2 processes, gloo on CPU) equals one process with the same batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = """
import os, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tests!r})
from test_train import _store, _spec, TINY_ARCH
from fsdlib.batches import FoldData
from fsdlib.train import train_fold
root = Path(sys.argv[1])
rank_dir = root / f"stores{{os.environ.get('RANK', '0')}}"
curated, y = _store(rank_dir / "curated.logmel.arrow", 48, seed=0)
noisy, ny = _store(rank_dir / "noisy.logmel.arrow", 48, seed=1, noisy=True)
data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)
arch = dict(TINY_ARCH, dropouts=[0.0, 0.0])  # dropout masks are drawn per rank: off for a bitwise comparison
spec = _spec(cycles=2, epochs_per_cycle=2, batch=12, optimizer="sgd", lr_max=0.05, lr_min=0.001, arch=arch)
train_fold(spec, data, 3, root / "out", root / "state", name="P", fold=0, device="cpu", progress=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "ddp_tiny.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
                          str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for cycle in (1, 2):
        a = torch.load(tmp_path / "single" / "out" / f"snapshot_{cycle}.pt")
        b = torch.load(tmp_path / "ddp" / "out" / f"snapshot_{cycle}.pt")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5, rtol=1e-4), (cycle, key)
