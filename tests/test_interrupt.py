"""SIGKILL after a cycle's snapshot, then a rerun: it trains only the remaining cycles, with the same weights and
metrics as an uninterrupted run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SCRIPT = """
import logging
import sys
import threading
from pathlib import Path
import numpy as np
sys.path.insert(0, {tests!r})
from test_train import _store, _spec
from fsdlib.batches import FoldData
from fsdlib.settings import InferenceConfig
from fsdlib.train import train_fold
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
root, hold_after = Path(sys.argv[1]), int(sys.argv[2])
curated, y = _store(root / "curated.logmel.arrow", 48, seed=0)
noisy, ny = _store(root / "noisy.logmel.arrow", 48, seed=1, noisy=True)
data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)

def after_cycle(cycle):
    print(f"saved cycle {{cycle}}", flush=True)
    if cycle == hold_after:  # tell the test, then wait here until it kills this process
        (root / "held").write_text(str(cycle))
        threading.Event().wait()

spec = _spec(cycles=3, epochs_per_cycle=1)
train_fold(spec, data, 3, root / "out", root / "state", InferenceConfig(), name="K", fold=0, progress=False,
           after_cycle=after_cycle)
"""


def _start(script: Path, root: Path, hold_after: int = 0) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), str(root), str(hold_after)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def test_sigkill_after_a_snapshot_then_rerun_trains_the_rest_and_matches_uninterrupted(tmp_path: Path) -> None:
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    straight = _finish(_start(script, tmp_path / "straight"))
    assert [line for line in straight.splitlines() if line.startswith("saved")] == \
        ["saved cycle 1", "saved cycle 2", "saved cycle 3"]

    killed = _start(script, tmp_path / "killed", hold_after=1)
    held = tmp_path / "killed" / "held"
    deadline = time.monotonic() + 600  # a generous bound on the first cycle, not a timing window
    while not held.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held.exists(), f"training never reached the end of cycle 1: {killed.poll()}"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "killed" / "out").glob("snapshot_*.pt")) == ["snapshot_1.pt"]
    assert not (tmp_path / "killed" / "out" / "metrics.json").exists()

    rerun = _finish(_start(script, tmp_path / "killed"))
    assert "K fold 0: resuming after cycle 1 of 3" in rerun
    assert [line for line in rerun.splitlines() if line.startswith("saved")] == ["saved cycle 2", "saved cycle 3"]
    for cycle in (1, 2, 3):
        a = torch.load(tmp_path / "straight" / "out" / f"snapshot_{cycle}.pt")
        b = torch.load(tmp_path / "killed" / "out" / f"snapshot_{cycle}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), f"snapshot {cycle} differs"
    for name in ("metrics.json", "oof.npz", "live/plots/metrics/train/total.tsv"):
        assert (tmp_path / "straight" / "out" / name).read_bytes() == (tmp_path / "killed" / "out" / name).read_bytes()
