"""Peak memory stays bounded on a dataset with one very long (10-minute) clip."""

import json
import subprocess
import sys
from pathlib import Path

LIMIT_MB = 2500  # features + grouped inference of a 10-minute clip among short ones, demo-size networks

SCRIPT = """
import json, resource, sys
from pathlib import Path
import numpy as np, soundfile as sf, torch
from fsdlib.features import LogMelConfig, build_feature_store
from fsdlib.inference import InferenceConfig, predict_clips
from fsdlib.models import build_model
from fsdlib.store import FeatureStore
root = Path(sys.argv[1])
rng = np.random.default_rng(0)
items = []
for i, seconds in enumerate([600.0] + [2.0] * 20):
    path = root / f"clip{i}.wav"
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 44100))).astype(np.float32), 44100, subtype="PCM_16")
    items.append((path.name, path))
build_feature_store(items, root / "store", LogMelConfig(), batch_seconds=60.0, progress=False)
mels = FeatureStore.open(root / "store.logmel.arrow")
waves = FeatureStore.open(root / "store.wave.arrow")
torch.manual_seed(0)
resnet = build_model("resnet", 10, True, layers=[1, 1, 1, 1], widths=[16, 32, 64, 128], hidden=128)
envnet = build_model("envnet", 10, True, width=0.25, hidden=128)
cfg = InferenceConfig(max_batch=64, max_elements=32_000_000)
p1 = predict_clips(resnet, [mels[i] for i in range(len(mels))], "logmel", "sigmoid", (0,), "zero", cfg)
p2 = predict_clips(envnet, [waves[i] for i in range(1, len(waves))], "wave", "softmax", (0,), "zero", cfg)
ok = bool(np.isfinite(p1).all() and np.isfinite(p2).all())
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "finite": ok}))
"""


def test_long_clip_memory_is_bounded(tmp_path: Path) -> None:
    script = tmp_path / "long_clip.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["finite"]
    assert result["peak_mb"] < LIMIT_MB, result
