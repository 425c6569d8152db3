"""Peak memory stays bounded on a dataset with very long (10-minute) clips: the features, and inference that
batches long clips with each other only up to `max_elements`."""

import json
import subprocess
import sys
from pathlib import Path

LIMIT_MB = 2500  # features + grouped inference of 10-minute clips among short ones, demo-size networks

SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np, soundfile as sf, torch
from fsdlib.features import build_feature_store
from fsdlib.inference import length_groups, predict_clips
from fsdlib.settings import FeatureSettings, InferenceConfig
from fsdlib.models import build_model
from fsdlib.store import FeatureStore

def peak_mb():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024

def reset_peak():  # the memory in use now, from which the next peak counts
    Path("/proc/self/clear_refs").write_text("5")
    return peak_mb()

root = Path(sys.argv[1])
rng = np.random.default_rng(0)
items = []
for i, seconds in enumerate([600.0, 590.0, 580.0, 570.0] + [2.0] * 20):  # the four long clips: one length group
    path = root / f"clip{i}.wav"
    sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 44100))).astype(np.float32), 44100, subtype="PCM_16")
    items.append((path.name, path))
build_feature_store(items, root / "store", FeatureSettings(batch_seconds=60.0), progress=False)
mels = FeatureStore.open(root / "store.logmel.arrow")
waves = FeatureStore.open(root / "store.wave.arrow")
clips = [np.array(mels[i]) for i in range(len(mels))]  # in memory before the peaks are measured
torch.manual_seed(0)
resnet = build_model("resnet", 10, True, layers=[1, 1, 1, 1], widths=[16, 32, 64, 128], hidden=128)
envnet = build_model("envnet", 10, True, width=0.25, hidden=128)
one_long = InferenceConfig(max_batch=64, max_elements=(len(clips[0]) + 64) * clips[0].shape[1])  # room for one
assert [len(g) for g in length_groups([len(c) + 64 for c in clips], InferenceConfig(max_elements=10**12), 128)] \\
    == [20, 4]  # without the cap the long clips would make one batch
peak = peak_mb()
before = reset_peak()
alone = predict_clips(resnet, clips[:1], "logmel", "sigmoid", (32,), "zero", one_long)
one, peak = peak_mb() - before, max(peak, peak_mb())
before = reset_peak()
grouped = predict_clips(resnet, clips, "logmel", "sigmoid", (32,), "zero", one_long)
four, peak = peak_mb() - before, max(peak, peak_mb())
p2 = predict_clips(envnet, [waves[i] for i in range(4, len(waves))], "wave", "softmax", (0,), "zero", InferenceConfig())
ok = bool(np.isfinite(grouped).all() and np.isfinite(p2).all() and np.allclose(alone, grouped[:1], atol=1e-6))
print(json.dumps({"peak_mb": max(peak, peak_mb()), "one_long_mb": one, "four_long_mb": four, "finite_and_same": ok}))
"""


def test_long_clip_memory_is_bounded(tmp_path: Path) -> None:
    script = tmp_path / "long_clip.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["finite_and_same"]
    assert result["peak_mb"] < LIMIT_MB, result
    # four long clips of one length group, capped at one per batch, cost about what one alone does (uncapped: ~4x)
    assert result["four_long_mb"] < 2 * result["one_long_mb"], result
