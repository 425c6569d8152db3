"""Running a test script alone and under torchrun (2 gloo processes on this machine), one thread each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)  # a lone process must not think it is one rank of a group
    env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)  # the ranks bootstrap from the rendezvous store's own port
    return env


def alone(script: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as one process."""
    return subprocess.run([sys.executable, str(script), *args], env=_env(), capture_output=True, text=True,
                          timeout=300)


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as two ranks of one process group on this machine. `--standalone` starts a rendezvous store that
    binds a port the OS picks (port 0) and keeps it, and the ranks' process group starts from that store: no port is
    picked free, released and bound again, which two torchrun tests side by side (pytest-xdist) could both pick."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *args], env=_env(), capture_output=True, text=True, timeout=300)
