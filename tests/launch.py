"""Running a test script alone and under torchrun (2 gloo processes on this machine), one thread each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)  # a lone process must not think it is one rank of a group
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alone(script: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as one process."""
    return subprocess.run([sys.executable, str(script), *args], env=_env(), capture_output=True, text=True,
                          timeout=300)


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as two ranks of one process group on this machine."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), str(script), *args],
                          env=_env(), capture_output=True, text=True, timeout=300)
