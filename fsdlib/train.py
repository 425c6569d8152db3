"""The one training loop (docs/method.md §5): multitask batches, cyclic cosine LR, a snapshot per cycle, resume.

`train_fold` trains one (model, fold) and writes its snapshots, their out-of-fold predictions, metrics and curves.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsdlib.atomic import atomic_path, write_json
from fsdlib.augment import augment_logmel, augment_wave, logmel_to_input
from fsdlib.batches import Batch, BatchMaker, FoldData, Part, prefetch
from fsdlib.device import autocast, resolve_device, to_device
from fsdlib.distributed import World, init_world, sync_batch_norm
from fsdlib.errors import FsdError
from fsdlib.inference import InferenceConfig, predict_clips
from fsdlib.losses import multitask_loss
from fsdlib.metrics import lwlrap
from fsdlib.models import TaggingModel
from fsdlib.progress import progress_bar
from fsdlib.resume import ResumeState, fingerprint, load_init_weights, publish_snapshot, save_cycle, snapshot_path
from fsdlib.schedule import build_optimizer, cyclic_cosine_scheduler
from fsdlib.spec import ModelSpec

log = logging.getLogger(__name__)
LR_STEP_TSV = Path("plots", "metrics", "lr_step.tsv")  # under a fold's live/ directory


@dataclass
class TrainResult:
    """Per-cycle validation lwlrap and where the outputs went."""

    cycle_lwlrap: list[float]
    out_dir: Path

    @property
    def metrics(self) -> dict[str, Any]:
        best = int(np.argmax(self.cycle_lwlrap))
        return {"cycle_lwlrap": self.cycle_lwlrap, "best": self.cycle_lwlrap[best], "best_cycle": best + 1,
                "final": self.cycle_lwlrap[-1]}


class StepNet(nn.Module):
    """The forward of one step, a module of its own so that DistributedDataParallel wraps exactly what a step runs.

    With `separate_passes` (the authors', docs/method.md §11) each part goes through the backbone on its own, so
    batch-norm statistics in training are computed per part, never over curated and noisy clips pooled; without,
    one backbone pass runs over the parts concatenated.
    """

    def __init__(self, model: TaggingModel, separate_passes: bool) -> None:
        super().__init__()
        self.model, self.separate_passes = model, separate_passes

    def forward(self, inputs: list[torch.Tensor], parts: tuple[str, ...]) -> list[torch.Tensor]:
        """Each part's logits: the noisy part from the noisy head, the curated and SPL parts from the curated head."""
        backbone, heads = self.model.backbone, self.model.heads
        part_heads = [heads.noisy if part == "noisy" else heads.curated for part in parts]
        if self.separate_passes:
            return [head(backbone(x)) for head, x in zip(part_heads, inputs, strict=True)]
        features = backbone(torch.cat(inputs) if len(inputs) > 1 else inputs[0])
        return [head(f) for head, f in zip(part_heads, torch.split(features, [len(x) for x in inputs]), strict=True)]


class Trainer:
    """Batch side: augmentations in torch on the device, the multitask loss, one optimiser step.

    Under torchrun every rank augments the same global batch, then trains on its own slice of it.
    """

    def __init__(self, spec: ModelSpec, model: TaggingModel, device: torch.device, world: World = World()) -> None:
        self.spec, self.model, self.device, self.world = spec, model, device, world
        self.augment = spec.augment_config()
        self.net: nn.Module = StepNet(model, spec.separate_passes)
        if world.size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def prepare(self, part: Part, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch part on the device, augmented, as network input and targets (this rank's slice)."""
        x_t = to_device(torch.from_numpy(part.x), self.device)
        y_t = to_device(torch.from_numpy(np.ascontiguousarray(part.y, dtype=np.float32)), self.device)
        if self.spec.family == "resnet":
            power = x_t.transpose(1, 2)  # (B, n_mels, T)
            power, y_t = augment_logmel(power, y_t, torch.from_numpy(part.valid), self.augment, gen)
            x_t = to_device(logmel_to_input(power), self.device, channels_last=True)
        else:
            x_t, y_t = augment_wave(x_t, y_t, self.augment, gen)
        mine = self.world.shard(len(x_t))
        return x_t[mine], y_t[mine]

    def step(self, batch: Batch, gen: torch.Generator, optimizer: torch.optim.Optimizer, where: str) -> dict[str, float]:
        """One optimiser step: curated, noisy and SPL parts through the network (`StepNet`), then the multitask loss."""
        names = tuple(batch.parts())
        inputs = [self.prepare(part, gen) for part in batch.parts().values()]
        with autocast(self.device):
            out = self.net([x for x, _ in inputs], names)
        logits = {k: v.float() for k, v in zip(names, out, strict=True)}  # losses in full precision
        targets = {k: y for k, (_, y) in zip(names, inputs, strict=True)}
        loss, components = multitask_loss(
            logits["curated"], targets["curated"], logits.get("noisy"), targets.get("noisy"), self.spec.activation,
            noisy_weight=self.spec.noisy_weight, spl_logits=logits.get("spl"), spl_targets=targets.get("spl"),
            spl_weight=self.spec.spl_weight, reduction=self.spec.loss_reduction)
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


class FoldTraining:
    """One (model, fold) being trained: model, optimiser, schedule, and what the finished cycles logged."""

    def __init__(self, spec: ModelSpec, data: FoldData, n_classes: int, name: str, fold: int,
                 init_weights: Path | None, device: str) -> None:
        self.spec, self.data, self.name, self.fold = spec, data, name, fold
        dev = resolve_device(device)
        self.world = init_world(dev)
        if self.world.size > 1 and dev.type == "cuda":
            dev = torch.device("cuda", self.world.local_rank)
        self.device = dev
        self.steps_per_epoch = max(1, len(data.train_idx) // spec.batch)
        torch.manual_seed(spec.seed_for(name, fold, "init"))
        self.model = spec.build(n_classes).to(dev)
        if init_weights is not None:
            load_init_weights(self.model, init_weights)
        if self.world.size > 1:
            self.model = sync_batch_norm(self.model)
        self.optimizer = build_optimizer(spec.optimizer, self.model.parameters(), spec.lr_max, spec.momentum,
                                         spec.weight_decay, spec.nesterov)
        self.scheduler = cyclic_cosine_scheduler(self.optimizer, self.steps_per_epoch * spec.epochs_per_cycle,
                                                 spec.lr_max, spec.lr_min)
        self.trainer = Trainer(spec, self.model, dev, self.world)
        self.cycle = 0  # finished cycles
        self.history: list[dict[str, float]] = []  # one row per epoch (rank 0 only)
        self.lr_steps: list[float] = []  # the learning rate of every optimiser step so far
        self.oof: list[np.ndarray] = []  # validation predictions of each finished cycle (rank 0 only)

    def restore(self, state: ResumeState, state_dir: Path) -> None:
        """Continue after the last finished cycle of an interrupted run."""
        snapshot = torch.load(snapshot_path(state_dir, state.cycle), map_location=self.device, weights_only=True)
        self.model.load_state_dict(snapshot)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.cycle, self.history, self.oof, self.lr_steps = state.cycle, state.history, state.oof, state.lr_steps
        log.info("%s fold %d: resuming after cycle %d of %d", self.name, self.fold, self.cycle, self.spec.cycles)

    def train_cycle(self, progress: bool) -> list[dict[str, float]]:
        """Train the next cycle, its randomness seeded from (seed, name, fold, cycle); one logged row per epoch."""
        spec, cycle, name, fold = self.spec, self.cycle, self.name, self.fold
        gen = torch.Generator().manual_seed(spec.seed_for(name, fold, cycle, "augment"))
        torch.manual_seed(spec.seed_for(name, fold, cycle, "dropout"))  # the global RNG drives dropout
        maker = BatchMaker(spec, self.data, self.steps_per_epoch, spec.seed_for(name, fold, cycle, "loader"))
        self.model.train()
        rows = []
        for epoch in range(spec.epochs_per_cycle):
            sums: dict[str, float] = {}
            label = f"{name} fold {fold} cycle {cycle + 1}/{spec.cycles} epoch {epoch + 1}/{spec.epochs_per_cycle}"
            with progress_bar(label, self.steps_per_epoch, enabled=progress and self.world.is_main) as advance:
                for step, batch in enumerate(prefetch(maker.epoch())):
                    where = f"{name} fold {fold} cycle {cycle + 1} epoch {epoch + 1} step {step + 1}"
                    self.lr_steps.append(self.optimizer.param_groups[0]["lr"])
                    for key, value in self.trainer.step(batch, gen, self.optimizer, where).items():
                        sums[key] = sums.get(key, 0.0) + value
                    self.scheduler.step()
                    advance()
            row = {f"train/{k}": v / self.steps_per_epoch for k, v in sums.items()}
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["epoch"] = cycle * spec.epochs_per_cycle + epoch + 1
            rows.append(row)
        self.cycle += 1
        return rows

    def validate(self, inference: InferenceConfig) -> float:
        """Predict the held-out curated clips with the current weights; keep them as this cycle's OOF."""
        d, spec = self.data, self.spec
        preds = predict_clips(self.model, [d.curated[int(i)] for i in d.val_idx], spec.kind, spec.activation, (0,),
                              spec.pad_mode, inference, self.device)
        self.oof.append(preds)
        score = lwlrap(d.curated_targets[d.val_idx], preds)
        log.info("%s fold %d cycle %d: validation lwlrap %.4f", self.name, self.fold, self.cycle, score)
        return score

    def write_outputs(self, out_dir: Path) -> TrainResult:
        """oof.npz (every cycle's predictions of the held-out clips) and metrics.json."""
        d = self.data
        fnames = np.array([d.curated.fnames[int(i)] for i in d.val_idx])
        with atomic_path(out_dir / "oof.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, fnames=fnames, preds=np.stack(self.oof), targets=d.curated_targets[d.val_idx])
        result = TrainResult([float(r["val/lwlrap"]) for r in self.history if "val/lwlrap" in r], out_dir)
        write_json(out_dir / "metrics.json", result.metrics)
        return result


def train_fold(spec: ModelSpec, data: FoldData, n_classes: int, out_dir: Path, state_dir: Path, name: str = "model",
               fold: int = 0, init_weights: Path | None = None, device: str = "auto",
               inference: InferenceConfig = InferenceConfig(), progress: bool = True,
               after_cycle: Callable[[int], None] | None = None) -> TrainResult:
    """Train one (model, fold); write snapshot_<c>.pt per cycle, oof.npz, metrics.json and live/ curves (per epoch,
    and the learning rate of every step in live/plots/metrics/lr_step.tsv).

    Resumes from `state_dir` (outside DVC outputs) after an interruption, with the same final weights as an
    uninterrupted run. `after_cycle(c)` runs on rank 0 once cycle c's resume state is saved.
    """
    from dvclive import Live

    run = FoldTraining(spec, data, n_classes, name, fold, init_weights, device)
    key = fingerprint(spec, data, name, fold, init_weights)
    state = ResumeState.load(state_dir, key)
    if state is not None:
        run.restore(state, state_dir)
    main = run.world.is_main  # only rank 0 validates, logs and writes
    if main:
        live = Live(str(out_dir / "live"), dvcyaml=False, save_dvc_exp=False, report=None)
        for row in run.history:  # replay what was logged before an interruption, so the curves are complete
            _log_row(live, row)
        if run.lr_steps:
            write_lr_steps(out_dir / "live", run.lr_steps)
        for c in range(1, run.cycle + 1):  # snapshots of cycles finished before an interruption
            publish_snapshot(state_dir, out_dir, c)
    while run.cycle < spec.cycles:
        rows = run.train_cycle(progress)
        if main:
            rows[-1]["val/lwlrap"] = run.validate(inference)
            for row in rows:
                _log_row(live, row)
            run.history.extend(rows)
            write_lr_steps(out_dir / "live", run.lr_steps)
            resume = ResumeState(run.cycle, run.optimizer.state_dict(), run.scheduler.state_dict(), run.history, run.oof,
                                 run.lr_steps)
            save_cycle(run.model, resume, state_dir, out_dir, key)
            if after_cycle is not None:
                after_cycle(run.cycle)
        run.world.barrier()
    if not main:
        return TrainResult([], out_dir)
    live.end()
    result = run.write_outputs(out_dir)
    shutil.rmtree(state_dir)  # finished: a later run (e.g. after a code change) must not resume from it
    return result


def write_lr_steps(live_dir: Path, lrs: list[float]) -> None:
    """The learning rate of every optimiser step as a dvclive-style TSV (columns step, lr; step = global iteration),
    so the cosine cycles show as they are; rewritten whole, atomically, after each cycle."""
    with atomic_path(live_dir / LR_STEP_TSV) as tmp:
        tmp.write_text("step\tlr\n" + "".join(f"{step}\t{lr}\n" for step, lr in enumerate(lrs)), encoding="utf-8")


def _log_row(live: Any, row: dict[str, float]) -> None:
    for key, value in row.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()

