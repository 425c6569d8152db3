"""Under torchrun with 2 gloo processes, the ranks form one group of size 2 and each forward pass sees its own half
of the global batch: the two halves together are exactly what one process sees."""

import json
from pathlib import Path

import numpy as np
from launch import alone, torchrun

SCRIPT = """
import json, os, sys
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from test_train import _store, _spec
import fsdlib.train as train_module
from fsdlib.batches import FoldData
from fsdlib.settings import InferenceConfig
root = Path(sys.argv[1])
rank = os.environ.get("RANK", "0")
curated, y = _store(root / f"stores{{rank}}" / "curated.logmel.arrow", 48, seed=0)
noisy, ny = _store(root / f"stores{{rank}}" / "noisy.logmel.arrow", 48, seed=1, noisy=True)
data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)
seen = {{"forwards": []}}
trainer_init = train_module.Trainer.__init__

def recording_init(self, spec, model, device, world):
    trainer_init(self, spec, model, device, world)
    group = torch.distributed.get_world_size() if torch.distributed.is_initialized() else None
    seen["world"] = {{"rank": world.rank, "size": world.size, "joined": world.joined, "group": group}}

    def record(module, args):
        if module.training:  # the training steps' forward passes, not validation
            seen["forwards"].append(args[0].flatten(1)[:, :64].tolist())  # each sample's first 64 inputs

    model.backbone.register_forward_pre_hook(record)

train_module.Trainer.__init__ = recording_init
spec = _spec(cycles=1, epochs_per_cycle=1, batch=12)
train_module.train_fold(spec, data, 3, root / "out", root / "state", InferenceConfig(), name="P", fold=0,
                        device="cpu", progress=False)
(root / f"seen{{rank}}.json").write_text(json.dumps(seen))
"""


def test_each_rank_trains_on_its_half_of_the_global_batch(tmp_path: Path) -> None:
    script = tmp_path / "shards.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    single = alone(script, str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    ddp = torchrun(script, str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "single" / "seen0.json").read_text())
    ranks = [json.loads((tmp_path / "ddp" / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert one["world"] == {"rank": 0, "size": 1, "joined": False, "group": None}
    assert [r["world"] for r in ranks] == [{"rank": r, "size": 2, "joined": True, "group": 2} for r in (0, 1)]
    assert len(one["forwards"]) >= 3  # 36 training clips in global batches of 12: 3 steps
    for whole, first, second in zip(one["forwards"], ranks[0]["forwards"], ranks[1]["forwards"], strict=True):
        assert len(first) == len(second) == len(whole) // 2
        np.testing.assert_allclose(first + second, whole, atol=1e-5)  # disjoint halves, together the whole batch
