"""The accelerator branches, reached on the CPU: fake CUDA tensors, meta tensors, CPU bf16 autocast, and stand-ins
for the process group and the CUDA runtime. Each test names the failure it guards against."""

import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import fsdlib.distributed as distributed
from fsdlib.batches import BatchMaker, FoldData
from fsdlib.device import autocast, cudnn_autotune, resolve_device, to_device
from fsdlib.distributed import World, _SyncBatchNormFunction, init_world
from fsdlib.errors import FsdError
from fsdlib.inference import predict_clips
from fsdlib.models import build_network  # noqa: E402
from fsdlib.models.heads import MultitaskHeads, TaggingModel
from fsdlib.settings import InferenceConfig
from fsdlib.train import FoldTraining, Trainer, dropout_seed

sys.path.insert(0, str(Path(__file__).parent))
from test_train import N_CLASSES, _spec, _store  # noqa: E402

INFERENCE = InferenceConfig()  # the library's batching defaults

ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Raised by a stand-in once it has seen what the test asks about."""


@pytest.fixture
def data(tmp_path: Path) -> FoldData:
    curated, y = _store(tmp_path / "curated.logmel.arrow", 48, seed=0)
    noisy, ny = _store(tmp_path / "noisy.logmel.arrow", 48, seed=1, noisy=True)
    return FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA runtime that reports one GPU without bf16 (nothing is ever allocated on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


# 1. The ResNet input is already on the GPU when it is made channels-last: pinning it crashed every step.
def test_a_tensor_already_on_the_device_is_not_pinned_again() -> None:
    with FakeTensorMode():
        on_gpu = torch.empty(2, 1, 8, 16, device="cuda")  # a fake CUDA tensor: pin_memory() on it raises
        out = to_device(on_gpu, torch.device("cuda"), channels_last=True)
        assert out.device.type == "cuda" and out.is_contiguous(memory_format=torch.channels_last)


def test_cpu_batches_keep_their_layout_on_the_cpu() -> None:
    x = torch.arange(2 * 1 * 8 * 16, dtype=torch.float32).reshape(2, 1, 8, 16)
    out = to_device(x, torch.device("cpu"), channels_last=True)
    assert out is x


# 2. Loss parts were all-reduced as a CPU tensor: an NCCL group has no CPU backend.
def test_loss_parts_are_averaged_on_the_process_groups_device(data: FoldData, monkeypatch: pytest.MonkeyPatch) -> None:
    run = FoldTraining(_spec(cycles=1, epochs_per_cycle=1), data, N_CLASSES, "T", 0, None, "cpu")
    group_device = torch.device("meta")  # stands for the rank's GPU of an NCCL group
    run.world = run.trainer.world = World(rank=0, size=2, device=group_device, joined=True)
    seen = []

    def all_reduce(tensor: torch.Tensor, *args, **kwargs) -> None:
        seen.append(tensor.device)
        raise Stop

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    with pytest.raises(Stop):
        run.train_cycle(progress=False)
    assert seen == [group_device]  # once per epoch, on the group's device


# 3. predict_clips chose a device but left the model where it was.
def test_predict_clips_runs_the_model_on_the_given_device(monkeypatch: pytest.MonkeyPatch) -> None:
    model = TaggingModel(nn.Flatten(), MultitaskHeads(8 * 4, N_CLASSES, hidden=8))
    seen = []

    def predict(self: TaggingModel, x: torch.Tensor, activation: str = "sigmoid",
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        seen.append((next(self.parameters()).device, x.device))
        raise Stop

    monkeypatch.setattr(TaggingModel, "predict", predict)
    with pytest.raises(Stop):
        predict_clips(model, [np.ones((4, 8), np.float32)], "logmel", "sigmoid", device=torch.device("meta"), pads=(0,),
                      pad_mode="zero", cfg=INFERENCE)
    assert seen == [(torch.device("meta"), torch.device("meta"))]
    assert next(model.parameters()).device.type == "cpu"  # the caller's model stays where it is


# 4. Under bf16 autocast, sigmoid scores of logits above ~6 were all exactly 1.0 (ties break lwlrap's ranking).
def test_heads_score_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    heads = MultitaskHeads(16, 5, hidden=16, multitask=False)
    last = heads.curated[-1]
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.copy_(torch.tensor([6.5, 7.0, 8.0, 9.0, 10.0]))
    model = TaggingModel(nn.Identity(), heads).eval()
    x = torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same autocast code as CUDA's
        scores = model.predict(x)
        logits = heads.curated(x)
    assert scores.dtype == logits.dtype == torch.float32
    assert (scores < 1).all() and len(torch.unique(scores)) > scores.numel() // 2  # bf16 scores: all exactly 1.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = nn.Sequential(*list(heads.curated)[:-1])(x)
    expected = torch.sigmoid(F.linear(hidden.float(), last.weight, last.bias))  # float32 last layer
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)


# 5. SyncBatchNorm counted elements in bf16 (257 became 256) and returned float32 activations.
def test_sync_batch_norm_counts_in_float32_and_keeps_the_input_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, *a, **k: None)  # a world of one
    torch.manual_seed(0)
    x = (torch.randn(1, 2, 1, 257) * 3 + 1).bfloat16().requires_grad_()
    weight, bias = torch.ones(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    y, mean, var, total = _SyncBatchNormFunction.apply(x, weight, bias, 1e-5)
    assert total.dtype == torch.float32 and total.item() == 257
    assert y.dtype == torch.bfloat16
    reference = F.batch_norm(x.detach().float(), None, None, weight.detach(), bias.detach(), training=True)
    torch.testing.assert_close(y.float(), reference, rtol=0, atol=2e-2)
    torch.testing.assert_close(mean, x.detach().float().mean(dim=(0, 2, 3)))
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32


# 6. (resume state sent from rank 0 before DDP's broadcast) is tests/test_distributed.py's resume test.


# 7. Every rank drew the same dropout masks.
def test_dropout_seeds_differ_by_rank_and_rank_0_keeps_a_lone_process_seed() -> None:
    spec = _spec()
    seeds = [dropout_seed(spec, "T", 0, 1, rank) for rank in range(4)]
    assert len(set(seeds)) == 4
    assert seeds[0] == spec.seed_for("T", 0, 1, "dropout")


def test_each_rank_seeds_its_own_dropout(data: FoldData, monkeypatch: pytest.MonkeyPatch) -> None:
    run = FoldTraining(_spec(cycles=1, epochs_per_cycle=1), data, N_CLASSES, "T", 0, None, "cpu")
    run.world = World(rank=1, size=2)
    seeds = []

    def manual_seed(seed: int) -> None:
        seeds.append(seed)
        raise Stop

    monkeypatch.setattr(torch, "manual_seed", manual_seed)
    with pytest.raises(Stop):
        run.train_cycle(progress=False)
    assert seeds == [run.spec.seed_for("T", 0, 0, "dropout", 1)]


# Robustness: which GPU, whether bf16, how the group starts.
def test_cuda_index_is_checked_against_the_device_count(one_gpu: None) -> None:
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(FsdError, match="sees 1 CUDA device"):
        resolve_device("cuda:1")


def test_no_bf16_autocast_where_the_gpu_lacks_bf16(one_gpu: None) -> None:
    assert isinstance(autocast(torch.device("cuda")), nullcontext)
    assert isinstance(autocast(torch.device("cpu")), nullcontext)


def test_each_rank_binds_its_gpu_before_joining_nccl(one_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that sees one GPU has local rank 1 on its node: it must use cuda:0, set it, and pass it to NCCL."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: calls.append((backend, kw.get("device_id"))))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    world = init_world(torch.device("cuda"))
    assert world == World(1, 2, 1, torch.device("cuda", 0), joined=True)
    assert calls == [("set_device", torch.device("cuda", 0)), ("nccl", torch.device("cuda", 0))]


def test_a_local_rank_beyond_several_visible_gpus_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.rank_device(torch.device("cuda"), 3, 4) == torch.device("cuda", 3)
    with pytest.raises(FsdError, match="local rank 4"):
        distributed.rank_device(torch.device("cuda"), 4, 2)


def test_cudnn_autotunes_fixed_crops_only_on_cuda() -> None:
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(torch.device("cuda"), fixed_shapes=not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before
    with cudnn_autotune(torch.device("cpu"), fixed_shapes=not before):
        assert torch.backends.cudnn.benchmark is before


# Speed: a training step reads nothing back from the device (no .item(), no truth value of a tensor).
def test_a_training_step_does_not_wait_for_the_device(data: FoldData, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    batch = next(BatchMaker(spec, data, 3, seed=0).epoch())
    model = build_network(spec, N_CLASSES)
    trainer = Trainer(spec, model, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def host_read(self: torch.Tensor, *args):
        raise AssertionError("a step read a tensor back on the host")

    monkeypatch.setattr(torch.Tensor, "item", host_read)
    monkeypatch.setattr(torch.Tensor, "tolist", host_read)
    monkeypatch.setattr(torch.Tensor, "__bool__", host_read)
    parts = trainer.step(batch, torch.Generator().manual_seed(0), optimizer)
    monkeypatch.undo()
    assert set(parts) == {"curated", "noisy", "total"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in parts.values())


def test_gpu_smoke_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """scripts/gpu_smoke.py end to end with --device cpu and tiny settings: inputs built, every row of the table."""
    env_cmd = [sys.executable, str(ROOT / "scripts" / "gpu_smoke.py")]
    subprocess.run([*env_cmd, "prepare", "--out", str(tmp_path / "smoke"), "--clips", "24"], check=True,
                   capture_output=True, text=True, timeout=60, cwd=ROOT)
    run = subprocess.run([*env_cmd, "run", "--inputs", str(tmp_path / "smoke"), "--device", "cpu", "--steps", "1",
                          "--no-paper"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    for row in ("demo ResNet (A)", "demo EnvNet (pre)", "DDP (1 rank, gloo)"):
        assert row in run.stdout


def test_gpu_smoke_dry_run_with_its_defaults(tmp_path: Path) -> None:
    """`prepare` and `run --device cpu` with every default (64 clips, 4 steps, the paper sizes): 4 steps of the demo
    models' batches (16 and 32) need more than the 48 training clips, so training runs on into further epochs
    instead of failing in the loader."""
    script = [sys.executable, str(ROOT / "scripts" / "gpu_smoke.py")]
    subprocess.run([*script, "prepare", "--out", str(tmp_path / "smoke")], check=True, capture_output=True, text=True,
                   timeout=60, cwd=ROOT)
    run = subprocess.run([*script, "run", "--inputs", str(tmp_path / "smoke"), "--device", "cpu"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if " | " in line]
    assert [row.split(" | ")[0].strip() for row in rows[1:]] == [
        "demo ResNet (A)", "demo EnvNet (pre)", "DDP (1 rank, gloo)", "paper A (resnet, 512x64)",
        "paper D (envnet, 133300x64)"]
    assert all(row.split(" | ")[3].strip() == "True" for row in rows[1:4])  # finite losses
