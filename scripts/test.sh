#!/usr/bin/env bash
# Install into .venv, then run the test suite (pytest); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
ruff check fsdlib stages tests benchmarks scripts
fsd dvc-yaml --check   # dvc.yaml is what the generator writes (fsdlib/dvc_yaml.py)
pytest -q "$@"
