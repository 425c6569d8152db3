#!/usr/bin/env bash
# Install into .venv, then run the whole DVC pipeline (demo dataset by default; see params.yaml data.root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
dvc repro "$@"
dvc metrics show 2>/dev/null || true
