"""The one training loop (SPEC section 5): multitask batches, cyclic cosine LR, a snapshot per cycle, resume.

Every model of the paper is a setting of `ModelSpec`; `train_fold` trains one (model, fold) and writes its
snapshots, out-of-fold predictions of every snapshot, metrics and dvclive curves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsdlib.atomic import atomic_path, write_json
from fsdlib.augment import (
    LogMelAugmentConfig,
    WaveAugmentConfig,
    augment_logmel,
    augment_wave,
    crop_logmel,
    crop_wave,
    logmel_to_input,
)
from fsdlib.device import autocast, resolve_device, to_device
from fsdlib.distributed import World, init_world, sync_batch_norm
from fsdlib.errors import FsdError
from fsdlib.inference import InferenceConfig, predict_clips
from fsdlib.losses import multitask_loss
from fsdlib.metrics import lwlrap
from fsdlib.models import TaggingModel, build_model
from fsdlib.progress import progress_bar
from fsdlib.schedule import build_optimizer, cyclic_cosine_scheduler
from fsdlib.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble, as written under `models.<name>` in params.yaml."""

    family: str  # resnet (log-mel) | envnet (waveform)
    activation: str = "sigmoid"  # sigmoid | softmax
    crop: int = 512  # frames (resnet) or samples (envnet)
    crops: tuple[int, ...] | None = None  # varying crop lengths: each step draws one (instead of `crop`)
    batch: int = 64
    cycles: int = 8
    epochs_per_cycle: int = 64
    lr_max: float = 1e-3
    lr_min: float = 1e-6
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    momentum: float = 0.9
    weight_decay: float = 0.0
    multitask: bool = True
    noisy_weight: float = 1.0
    init_from: str | None = None  # another model's name: start from its same-fold final snapshot
    pad_mode: str = "zero"  # zero | loop, for short training crops and TTA pads
    seed: int = 0
    arch: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    spl: dict[str, Any] = field(default_factory=dict)  # soft pseudo labels: {variant, weight}; empty = off
    snapshot_cycles: tuple[int, ...] | None = None  # cycles used at prediction time (1-based); None = all
    tta_pads: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return "logmel" if self.family == "resnet" else "wave"

    def validate(self, name: str) -> None:
        """Check the settings before any work, naming the model and the bad value."""
        checks = [
            (self.family in ("resnet", "envnet"), f"family must be resnet or envnet, got {self.family!r}"),
            (self.activation in ("sigmoid", "softmax"), f"activation must be sigmoid or softmax, got {self.activation!r}"),
            (self.optimizer in ("adam", "sgd"), f"optimizer must be adam or sgd, got {self.optimizer!r}"),
            (self.pad_mode in ("zero", "loop"), f"pad_mode must be zero or loop, got {self.pad_mode!r}"),
            (self.crop > 0 and self.batch > 0, "crop and batch must be positive"),
            (not self.crops or min(self.crops) > 0, f"crops must be positive lengths, got {self.crops}"),
            (self.cycles > 0 and self.epochs_per_cycle > 0, "cycles and epochs_per_cycle must be positive"),
            (0 < self.lr_min <= self.lr_max, f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}"),
            (not self.spl or self.spl.get("variant") in ("all_folds", "leak_free"),
             f"spl.variant must be all_folds or leak_free, got {self.spl.get('variant')!r}"),
            (not self.spl or self.activation == "sigmoid", "soft pseudo labels train a sigmoid curated head"),
        ]
        for ok, problem in checks:
            if not ok:
                raise FsdError(f"models.{name}: {problem}")

    @property
    def spl_variant(self) -> str | None:
        return self.spl.get("variant") if self.spl else None

    @property
    def spl_weight(self) -> float:
        return float(self.spl.get("weight", 20.0))

    def augment_config(self) -> LogMelAugmentConfig | WaveAugmentConfig:
        cls = LogMelAugmentConfig if self.family == "resnet" else WaveAugmentConfig
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()})
        except TypeError as exc:
            raise FsdError(f"bad augment settings for {self.family}: {exc}") from None

    def build(self, n_classes: int) -> TaggingModel:
        """The network, in channels-last memory: 1.9x faster ResNet training steps on the CPU (oneDNN), and
        the layout cuDNN prefers."""
        model = build_model(self.family, n_classes, self.multitask, **dict(self.arch))
        return model.to(memory_format=torch.channels_last)


@dataclass
class FoldData:
    """What one (model, fold) trains on: stores and targets, and which curated clips are held out."""

    curated: FeatureStore
    curated_targets: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    noisy: FeatureStore | None = None
    noisy_targets: np.ndarray | None = None
    spl_targets: np.ndarray | None = None  # (n_noisy, C) soft pseudo labels for this student fold
    spl_noisy_idx: np.ndarray | None = None  # noisy clips allowed in SPL batches (not in the validation fold)

    def spl_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """SPL sampling pool: curated training clips (weight 1) then allowed noisy clips (N_cur / N_noisy).

        Returns pool entries as (is_noisy, index) pairs in one (n, 2) array and their probabilities, so
        curated and pseudo-labelled noisy clips are drawn 1:1 in expectation.
        """
        cur, noisy = self.train_idx, self.spl_noisy_idx
        pool = np.concatenate([np.stack([np.zeros_like(cur), cur], 1), np.stack([np.ones_like(noisy), noisy], 1)])
        weights = np.concatenate([np.ones(len(cur)), np.full(len(noisy), len(cur) / max(len(noisy), 1))])
        return pool, weights / weights.sum()


@dataclass
class TrainResult:
    """Per-cycle validation lwlrap and where the outputs went."""

    cycle_lwlrap: list[float]
    out_dir: Path

    @property
    def metrics(self) -> dict[str, Any]:
        best = int(np.argmax(self.cycle_lwlrap))
        return {
            "cycle_lwlrap": self.cycle_lwlrap,
            "best": self.cycle_lwlrap[best],
            "best_cycle": best + 1,
            "final": self.cycle_lwlrap[-1],
        }


def _seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (so each cycle's randomness is independent of resume)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _cycling(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of indices into n items: shuffled passes, each item once per pass."""
    carry = np.empty(0, dtype=np.int64)
    while True:
        while len(carry) < batch:
            carry = np.concatenate([carry, rng.permutation(n)])
        yield carry[:batch]
        carry = carry[batch:]


class BatchMaker:
    """Loader side: draws clip indices and crops memory-mapped clips (numpy slicing only)."""

    def __init__(self, spec: ModelSpec, data: FoldData, steps_per_epoch: int, seed: int) -> None:
        self.spec, self.data, self.steps = spec, data, steps_per_epoch
        self.rng = np.random.default_rng(seed)
        self.noisy = (
            _cycling(len(data.noisy), spec.batch, self.rng) if spec.multitask and data.noisy is not None else None
        )
        self.spl = data.spl_pool() if data.spl_targets is not None else None

    def _crop(self, store: FeatureStore, idx: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self._crop_clips([store[int(i)] for i in idx], length)

    def _crop_clips(self, clips: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.spec.family == "resnet":
            x, valid = crop_logmel(clips, length, self.rng, self.spec.pad_mode)
            return x, valid
        return crop_wave(clips, length, self.rng, self.spec.pad_mode), None

    def epoch(self) -> Iterator[dict[str, Any]]:
        """One epoch: a pass over the curated training fold, each step with a noisy batch when multitask."""
        d = self.data
        perm = self.rng.permutation(d.train_idx)
        for step in range(self.steps):
            idx = perm[step * self.spec.batch : (step + 1) * self.spec.batch]
            length = int(self.rng.choice(self.spec.crops)) if self.spec.crops else self.spec.crop
            x, valid = self._crop(d.curated, idx, length)
            batch = {"x": x, "valid": valid, "y": d.curated_targets[idx]}
            if self.noisy is not None:
                nidx = next(self.noisy)
                batch["nx"], batch["nvalid"] = self._crop(d.noisy, nidx, length)
                batch["ny"] = d.noisy_targets[nidx]
            if self.spl is not None:
                batch["sx"], batch["svalid"], batch["sy"] = self._spl_batch(length)
            yield batch

    def _spl_batch(self, length: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """A batch mixing curated clips (their labels) and pseudo-labelled noisy clips, 1:1 in expectation."""
        d, (pool, prob) = self.data, self.spl
        picks = pool[self.rng.choice(len(pool), size=self.spec.batch, p=prob)]
        stores = (d.curated, d.noisy)
        targets = np.stack([d.curated_targets[i] if s == 0 else d.spl_targets[i] for s, i in picks])
        x, valid = self._crop_clips([stores[s][int(i)] for s, i in picks], length)
        return x, valid, targets


def _prefetch(it: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Prepare the next batch in a thread while the current one trains (numpy copies release the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, it, None)
        while True:
            batch = future.result()
            if batch is None:
                return
            future = pool.submit(next, it, None)
            yield batch


class StepNet(nn.Module):
    """The forward of one step: one backbone pass over all parts, then each part's head.

    A module of its own so that DistributedDataParallel can wrap exactly what a step runs.
    """

    def __init__(self, model: TaggingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, parts: tuple[str, ...], sizes: tuple[int, ...]) -> list[torch.Tensor]:
        features = self.model.backbone(x)
        heads = self.model.heads
        return [heads.noisy(c) if part == "nx" else heads.curated(c)
                for part, c in zip(parts, torch.split(features, list(sizes)), strict=True)]


class Trainer:
    """Batch side: augmentations in torch on the device, the multitask loss, one optimiser step.

    Under torchrun every rank augments the same global batch, then trains on its own slice of it.
    """

    def __init__(self, spec: ModelSpec, model: TaggingModel, device: torch.device, name: str,
                 world: World = World()) -> None:
        self.spec, self.model, self.device, self.name, self.world = spec, model, device, name, world
        self.augment = spec.augment_config()
        self.net: nn.Module = StepNet(model)
        if world.size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def _inputs(self, x: np.ndarray, valid: np.ndarray | None, y: np.ndarray, gen: torch.Generator):
        x_t = to_device(torch.from_numpy(x), self.device)
        y_t = to_device(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), self.device)
        if self.spec.family == "resnet":
            power = x_t.transpose(1, 2)  # (B, n_mels, T)
            power, y_t = augment_logmel(power, y_t, torch.from_numpy(valid), self.augment, gen)
            x_t = to_device(logmel_to_input(power), self.device, channels_last=True)
        else:
            x_t, y_t = augment_wave(x_t, y_t, self.augment, gen)
        mine = self.world.shard(len(x_t))
        return x_t[mine], y_t[mine]

    def step(self, batch: dict[str, Any], gen: torch.Generator, optimizer: torch.optim.Optimizer,
             where: str) -> dict[str, float]:
        """One optimiser step: curated, noisy and SPL batches through one backbone pass, then their heads."""
        names = tuple(k for k in ("x", "nx", "sx") if k in batch)
        parts = [self._inputs(batch[k], batch[k[:-1] + "valid"], batch[k[:-1] + "y"], gen) for k in names]
        targets = dict(zip(names, [y for _, y in parts], strict=True))
        with autocast(self.device):
            x = torch.cat([x for x, _ in parts]) if len(parts) > 1 else parts[0][0]
            out = self.net(x, names, tuple(len(x) for x, _ in parts))
        logits = {k: v.float() for k, v in zip(names, out, strict=True)}  # losses in full precision
        loss, components = multitask_loss(
            logits["x"], targets["x"], logits.get("nx"), targets.get("nx"), self.spec.activation,
            noisy_weight=self.spec.noisy_weight, spl_logits=logits.get("sx"), spl_targets=targets.get("sx"),
            spl_weight=self.spec.spl_weight,
        )
        if not torch.isfinite(loss):
            raise FsdError(f"non-finite loss ({loss.item()}) in model {where}; no weights were saved")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        components["total"] = loss.item()
        if self.world.size > 1:  # log the global batch's mean, as a single process would
            values = torch.tensor(list(components.values()), dtype=torch.float64)
            torch.distributed.all_reduce(values)
            components = dict(zip(components, (values / self.world.size).tolist(), strict=True))
        return components


def _fingerprint(spec: ModelSpec, data: FoldData, name: str, fold: int, init: Path | None) -> str:
    """What a resume state must match: the settings, the fold split, the stores and the initial weights."""
    parts = [asdict(spec), name, fold, data.train_idx.tolist(), data.val_idx.tolist(),
             data.curated.path.stat().st_size, None if data.noisy is None else data.noisy.path.stat().st_size,
             None if init is None else hashlib.sha256(init.read_bytes()).hexdigest(),
             None if data.spl_targets is None else hashlib.sha256(data.spl_targets.tobytes()).hexdigest()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _load_resume(state_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    path = state_dir / "resume.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged state is not fatal: start over
        log.warning("%s: ignoring unreadable resume state (%s)", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.info("%s: settings changed since the resume state was written; starting over", path)
        return None
    if not (state_dir / f"snapshot_{state['cycle']}.pt").is_file():
        log.warning("%s: its snapshot is missing; starting over", path)
        return None
    return state


def train_fold(
    spec: ModelSpec,
    data: FoldData,
    n_classes: int,
    out_dir: Path,
    state_dir: Path,
    name: str = "model",
    fold: int = 0,
    init_weights: Path | None = None,
    device: str = "auto",
    inference: InferenceConfig = InferenceConfig(),
    progress: bool = True,
) -> TrainResult:
    """Train one (model, fold); write snapshot_<c>.pt per cycle, oof.npz, metrics.json and live/ curves.

    Resumes from `state_dir` (outside DVC outputs) after an interruption, with the same final weights as an
    uninterrupted run: each cycle's randomness is seeded from (seed, fold, cycle).
    """
    from dvclive import Live

    spec.validate(name)
    dev = resolve_device(device)
    world = init_world(dev)
    if world.size > 1 and dev.type == "cuda":
        dev = torch.device("cuda", world.local_rank)
    main = world.is_main  # only rank 0 validates, logs and writes
    steps_per_epoch = max(1, len(data.train_idx) // spec.batch)
    iters_per_cycle = steps_per_epoch * spec.epochs_per_cycle
    torch.manual_seed(_seed(spec.seed, name, fold, "init"))
    model = spec.build(n_classes).to(dev)
    if init_weights is not None:
        _load_weights(model, init_weights)
    if world.size > 1:
        model = sync_batch_norm(model)
    optimizer = build_optimizer(spec.optimizer, model.parameters(), spec.lr_max, spec.momentum, spec.weight_decay)
    scheduler = cyclic_cosine_scheduler(optimizer, iters_per_cycle, spec.lr_max, spec.lr_min)
    trainer = Trainer(spec, model, dev, name, world)

    fingerprint = _fingerprint(spec, data, name, fold, init_weights)
    state = _load_resume(state_dir, fingerprint)
    history: list[dict[str, float]] = []
    oof: list[np.ndarray] = []
    start_cycle = 0
    if state is not None:
        model.load_state_dict(torch.load(state_dir / f"snapshot_{state['cycle']}.pt", map_location=dev))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, oof, start_cycle = state["history"], state["oof"], state["cycle"]
        log.info("%s fold %d: resuming after cycle %d of %d", name, fold, start_cycle, spec.cycles)

    live = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        live = Live(str(out_dir / "live"), dvcyaml=False, save_dvc_exp=False, report=None)
        for row in history:  # replay what was logged before an interruption, so the curves are complete
            _log_row(live, row)
        for c in range(1, start_cycle + 1):  # snapshots of cycles finished before an interruption
            shutil.copyfile(state_dir / f"snapshot_{c}.pt", out_dir / f"snapshot_{c}.pt")

    val_clips = [data.curated[int(i)] for i in data.val_idx]
    val_truth = data.curated_targets[data.val_idx]
    for cycle in range(start_cycle, spec.cycles):
        gen = torch.Generator().manual_seed(_seed(spec.seed, name, fold, cycle, "augment"))
        torch.manual_seed(_seed(spec.seed, name, fold, cycle, "dropout"))  # the global RNG drives dropout
        maker = BatchMaker(spec, data, steps_per_epoch, _seed(spec.seed, name, fold, cycle, "loader"))
        model.train()
        for epoch in range(spec.epochs_per_cycle):
            sums: dict[str, float] = {}
            label = f"{name} fold {fold} cycle {cycle + 1}/{spec.cycles} epoch {epoch + 1}/{spec.epochs_per_cycle}"
            with progress_bar(label, steps_per_epoch, enabled=progress and main) as advance:
                for step, batch in enumerate(_prefetch(maker.epoch())):
                    where = f"{name} fold {fold} cycle {cycle + 1} epoch {epoch + 1} step {step + 1}"
                    for key, value in trainer.step(batch, gen, optimizer, where).items():
                        sums[key] = sums.get(key, 0.0) + value
                    scheduler.step()
                    advance()
            row = {f"train/{k}": v / steps_per_epoch for k, v in sums.items()}
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["epoch"] = cycle * spec.epochs_per_cycle + epoch + 1
            if epoch == spec.epochs_per_cycle - 1 and main:
                preds = predict_clips(model, val_clips, spec.kind, spec.activation, (0,), spec.pad_mode, inference, dev)
                oof.append(preds)
                row["val/lwlrap"] = lwlrap(val_truth, preds)
                log.info("%s fold %d cycle %d: validation lwlrap %.4f", name, fold, cycle + 1, row["val/lwlrap"])
            if main:
                _log_row(live, row)
                history.append(row)
        if main:
            snapshot = state_dir / f"snapshot_{cycle + 1}.pt"
            _save(model.state_dict(), snapshot)
            _save({"fingerprint": fingerprint, "cycle": cycle + 1, "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "history": history, "oof": oof}, state_dir / "resume.pt")
            with atomic_path(out_dir / snapshot.name) as tmp:
                shutil.copyfile(snapshot, tmp)
        world.barrier()
    if not main:
        return TrainResult([], out_dir)
    live.end()

    val_fnames = np.array([data.curated.fnames[int(i)] for i in data.val_idx])
    with atomic_path(out_dir / "oof.npz") as tmp:
        with tmp.open("wb") as f:
            np.savez(f, fnames=val_fnames, preds=np.stack(oof), targets=val_truth)
    result = TrainResult([float(r["val/lwlrap"]) for r in history if "val/lwlrap" in r], out_dir)
    write_json(out_dir / "metrics.json", result.metrics)
    shutil.rmtree(state_dir)  # finished: a later run (e.g. after a code change) must not resume from it
    return result


def _save(obj: Any, path: Path) -> None:
    """torch.save atomically, through a file object so the archive does not embed the temporary name."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)


def _log_row(live: Any, row: dict[str, float]) -> None:
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


def _load_weights(model: TaggingModel, path: Path) -> None:
    """Start from another model's snapshot (init_from); the architectures must match."""
    if not path.is_file():
        raise FsdError("init_from snapshot not found (train that model first)", path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("heads.noisy.")]  # a head may be added or dropped
    unexpected = [k for k in unexpected if not k.startswith("heads.noisy.")]
    if missing or unexpected:
        raise FsdError(f"init_from snapshot does not fit this architecture (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})", path)
