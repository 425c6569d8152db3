#!/usr/bin/env bash
# Install into .venv, then run the whole DVC pipeline.
#   ./scripts/run_pipeline.sh                         demo dataset, demo-scale models (params.yaml)
#   ./scripts/run_pipeline.sh --paper /path/to/root   paper scale on a real FSDKaggle2019 root:
#                                                     params/paper.yaml becomes params.yaml (data.root set)
#   ./scripts/run_pipeline.sh --paper /path/to/root --authors
#                                                     the same with params/authors.yaml: the authors' code as it ran
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
if [ "${1:-}" = "--paper" ]; then
  root=${2:?usage: $0 --paper /path/to/FSDKaggle2019}
  [ -d "$root" ] || { echo "error: $root: dataset root not found" >&2; exit 1; }
  source_params=params/paper.yaml
  shift 2
  if [ "${1:-}" = "--authors" ]; then
    source_params=params/authors.yaml
    shift
  fi
  python - "$root" "$source_params" <<'PY'
import json
import sys
from pathlib import Path
text = Path(sys.argv[2]).read_text()
placeholder = "root: /path/to/FSDKaggle2019"
if text.count(placeholder) != 1:
    sys.exit(f"error: {sys.argv[2]}: expected one '{placeholder}' to replace")
# a double-quoted YAML string (JSON's escapes), so that any path reads back as itself
Path("params.yaml").write_text(text.replace(placeholder, f"root: {json.dumps(sys.argv[1])}"))
PY
fi
dvc repro "$@"
dvc metrics show 2>/dev/null || true
