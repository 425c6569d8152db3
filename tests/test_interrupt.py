"""SIGKILL in the middle of a training cycle, then a rerun: same weights and metrics as an uninterrupted run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SCRIPT = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tests!r})
from test_train import _store, _spec
from fsdlib.train import FoldData, train_fold
root = Path(sys.argv[1])
curated, y = _store(root / "curated.logmel.arrow", 48, seed=0)
noisy, ny = _store(root / "noisy.logmel.arrow", 48, seed=1, noisy=True)
data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)
spec = _spec(cycles=3, epochs_per_cycle=6, batch=6)
train_fold(spec, data, 3, root / "out", root / "state", name="K", fold=0, progress=False)
"""


def _start(script: Path, root: Path) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_sigkill_mid_cycle_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    straight = _start(script, tmp_path / "straight")
    assert straight.wait(timeout=300) == 0, straight.stdout.read().decode()

    killed = _start(script, tmp_path / "killed")
    first_snapshot = tmp_path / "killed" / "state" / "snapshot_1.pt"
    deadline = time.time() + 300
    while not first_snapshot.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into cycle 2
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "killed" / "out" / "metrics.json").exists()

    rerun = _start(script, tmp_path / "killed")
    output = rerun.stdout.read().decode()
    assert rerun.wait(timeout=300) == 0, output
    for cycle in (1, 2, 3):
        a = torch.load(tmp_path / "straight" / "out" / f"snapshot_{cycle}.pt")
        b = torch.load(tmp_path / "killed" / "out" / f"snapshot_{cycle}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), f"snapshot {cycle} differs"
    assert (tmp_path / "straight" / "out" / "metrics.json").read_text() == \
        (tmp_path / "killed" / "out" / "metrics.json").read_text()
