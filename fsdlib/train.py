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
from fsdlib.augment import augment_logmel, augment_wave, gather_scaled_crop
from fsdlib.batches import Batch, BatchMaker, FoldData, Part
from fsdlib.clip_input import logmel_to_input
from fsdlib.device import autocast, cudnn_autotune, resolve_device, to_device
from fsdlib.distributed import World, init_world, sync_batch_norm
from fsdlib.errors import FsdError
from fsdlib.inference import predict_clips
from fsdlib.losses import multitask_loss
from fsdlib.metrics import lwlrap
from fsdlib.models import TaggingModel, build_network
from fsdlib.prefetch import prefetch
from fsdlib.progress import progress_bar
from fsdlib.resume import BestEpoch, ResumeState, fingerprint, load_init_weights, publish_snapshot, save_cycle, snapshot_path
from fsdlib.schedule import build_optimizer, cyclic_cosine_scheduler
from fsdlib.settings import InferenceConfig
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

    Under torchrun every rank augments the same global batch, then trains on its own slice of it. A step never
    waits for the device: its loss parts stay tensors there (`FoldTraining.train_cycle` reads them once per epoch).
    """

    def __init__(self, spec: ModelSpec, model: TaggingModel, device: torch.device, world: World = World()) -> None:
        self.spec, self.model, self.device, self.world = spec, model, device, world
        self.augment = spec.augment_config()
        self.net: nn.Module = StepNet(model, spec.separate_passes)
        if world.joined:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def prepare(self, part: Part, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch part on the device, augmented, as network input and targets (this rank's slice)."""
        x_t = to_device(torch.from_numpy(part.x), self.device)
        y_t = to_device(torch.from_numpy(np.ascontiguousarray(part.y, dtype=np.float32)), self.device)
        if self.spec.kind == "logmel":
            power = x_t.transpose(1, 2)  # (B, n_mels, T)
            valid = to_device(torch.from_numpy(part.valid), self.device)
            power, y_t = augment_logmel(power, y_t, valid, self.augment, gen)
            x_t = to_device(logmel_to_input(power), self.device, channels_last=True)
        else:
            if part.scaled is not None:  # the authors' time-scaled crops, gathered from the loader's windows
                x_t = gather_scaled_crop(x_t, part.scaled)
            x_t, y_t = augment_wave(x_t, y_t, self.augment, gen)
        mine = self.world.shard(len(x_t))
        return x_t[mine], y_t[mine]

    def step(self, batch: Batch, gen: torch.Generator, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One optimiser step: curated, noisy and SPL parts through the network (`StepNet`), then the multitask loss.

        Returns this rank's loss parts and their weighted "total" as 0-d tensors on the device (not yet checked
        for being finite: reading them would wait for the step to finish)."""
        names = tuple(batch.parts())
        inputs = [self.prepare(part, gen) for part in batch.parts().values()]
        with autocast(self.device):
            out = self.net([x for x, _ in inputs], names)
        logits = {k: v.float() for k, v in zip(names, out, strict=True)}  # losses in full precision
        targets = {k: y for k, (_, y) in zip(names, inputs, strict=True)}
        loss, components = multitask_loss(
            logits["curated"], targets["curated"], logits.get("noisy"), targets.get("noisy"), self.spec.activation,
            noisy_weight=self.spec.noisy_weight, spl_logits=logits.get("spl"), spl_targets=targets.get("spl"),
            spl_weight=self.spec.spl_weight, reduction=self.spec.loss_reduction, curated_bce=self.spec.curated_loss,
            noisy_bce=self.spec.noisy_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        components["total"] = loss.detach()
        return components


class FoldTraining:
    """One (model, fold) being trained: model, optimiser, schedule, and what the finished cycles logged."""

    def __init__(self, spec: ModelSpec, data: FoldData, n_classes: int, name: str, fold: int,
                 init_weights: Path | None, device: str, state_dir: Path | None = None, key: str = "") -> None:
        """With `state_dir`, continue from the resume state there that matches `key` (if any)."""
        self.spec, self.data, self.name, self.fold = spec, data, name, fold
        self.world = init_world(resolve_device(device))
        self.device = dev = self.world.device
        self.steps_per_epoch = max(1, len(data.train_idx) // spec.batch)
        torch.manual_seed(spec.seed_for(name, fold, "init"))
        self.model = build_network(spec, n_classes).to(dev)
        if init_weights is not None:
            load_init_weights(self.model, init_weights)
        if self.world.joined:
            self.model = sync_batch_norm(self.model)
        self.optimizer = build_optimizer(spec.optimizer, self.model.parameters(), spec.lr_max, spec.momentum,
                                         spec.weight_decay, spec.nesterov)
        self.scheduler = cyclic_cosine_scheduler(self.optimizer, self.steps_per_epoch * spec.epochs_per_cycle,
                                                 spec.lr_max, spec.lr_min)
        self.cycle = 0  # finished cycles
        self.history: list[dict[str, float]] = []  # one row per epoch (rank 0 only)
        self.lr_steps: list[float] = []  # the learning rate of every optimiser step so far
        self.oof: list[np.ndarray] = []  # validation predictions of each finished cycle (rank 0 only)
        self.best: BestEpoch | None = None  # the best validated epoch so far (rank 0 only)
        if state_dir is not None:
            self.resume(state_dir, key)
        self.trainer = Trainer(spec, self.model, dev, self.world)  # under DDP: rank 0's weights broadcast, after resume

    def resume(self, state_dir: Path, key: str) -> None:
        """Continue after the last finished cycle of an interrupted run. Rank 0 reads the state and sends it to
        every rank, so ranks need not share a filesystem and all continue from the same cycle and weights."""
        found = None
        if self.world.is_main:
            state = ResumeState.load(state_dir, key)
            if state is not None:
                snapshot = snapshot_path(state_dir, state.cycle)
                try:
                    found = state, torch.load(snapshot, map_location="cpu", weights_only=True)
                except Exception as exc:  # damaged: start over, as for a damaged state (fsdlib/resume.py)
                    log.warning("%s: ignoring an unreadable snapshot (%s); starting over", snapshot, exc)
                if found is not None and not fits(self.model, found[1]):  # written by code that built another network
                    log.warning("%s: its weights do not fit this network; starting over", snapshot)
                    found = None
        found = self.world.from_main(found)
        if found is not None:
            self.restore(*found)

    def restore(self, state: ResumeState, snapshot: dict[str, torch.Tensor]) -> None:
        """Take over an interrupted run's state after its cycle `state.cycle` and that cycle's weights."""
        self.model.load_state_dict(snapshot)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.cycle, self.history, self.oof, self.lr_steps = state.cycle, state.history, state.oof, state.lr_steps
        self.best = state.best
        log.info("%s fold %d: resuming after cycle %d of %d", self.name, self.fold, self.cycle, self.spec.cycles)

    def train_cycle(self, progress: bool, after_epoch: Callable[[dict[str, float]], None] | None = None,
                    ) -> list[dict[str, float]]:
        """Train the next cycle, its randomness seeded from (seed, name, fold, cycle); one logged row per epoch.
        `after_epoch(row)` runs after each epoch but the cycle's last (which the cycle's validation covers)."""
        spec, cycle, name, fold = self.spec, self.cycle, self.name, self.fold
        # Augmentation draws are made on the batch's device (a CPU generator on the CPU: the same numbers as ever).
        gen = torch.Generator(self.device).manual_seed(spec.seed_for(name, fold, cycle, "augment"))
        torch.manual_seed(dropout_seed(spec, name, fold, cycle, self.world.rank))  # the global RNG drives dropout
        maker = BatchMaker(spec, self.data, self.steps_per_epoch, spec.seed_for(name, fold, cycle, "loader"))
        self.model.train()
        rows = []
        for epoch in range(spec.epochs_per_cycle):
            parts: list[torch.Tensor] = []  # each step's loss parts, on the device until the epoch ends
            label = f"{name} fold {fold} cycle {cycle + 1}/{spec.cycles} epoch {epoch + 1}/{spec.epochs_per_cycle}"
            with (progress_bar(label, self.steps_per_epoch, enabled=progress and self.world.is_main) as advance,
                  cudnn_autotune(self.device, fixed_shapes=not spec.crops)):
                for batch in prefetch(maker.epoch()):
                    self.lr_steps.append(self.optimizer.param_groups[0]["lr"])
                    components = self.trainer.step(batch, gen, self.optimizer)
                    parts.append(torch.stack(list(components.values())))
                    self.scheduler.step()
                    advance()
            sums = self._epoch_sums(list(components), parts, f"{name} fold {fold} cycle {cycle + 1} epoch {epoch + 1}")
            row = {f"train/{k}": v / self.steps_per_epoch for k, v in sums.items()}
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["epoch"] = cycle * spec.epochs_per_cycle + epoch + 1
            rows.append(row)
            if after_epoch is not None and epoch + 1 < spec.epochs_per_cycle:
                after_epoch(row)
                self.model.train()
        self.cycle += 1
        return rows

    def _epoch_sums(self, names: list[str], parts: list[torch.Tensor], where: str) -> dict[str, float]:
        """Each loss part summed over the epoch's steps (means over ranks under torchrun, as one process would
        log), read from the device once; a non-finite total stops training, naming its first step."""
        steps = self.world.mean(torch.stack(parts).double()).tolist()
        for step, values in enumerate(steps):
            total = values[names.index("total")]
            if not np.isfinite(total):
                raise FsdError(f"non-finite loss ({total}) in model {where} step {step + 1}; no weights were saved")
        return {key: sum(values[i] for values in steps) for i, key in enumerate(names)}

    def validate(self, inference: InferenceConfig, epoch: int, cycle_end: bool = True) -> float:
        """Predict the held-out curated clips with the current weights (after `epoch`, 1-based over the run); at a
        cycle's end keep them as this cycle's OOF. The best epoch so far keeps its predictions too."""
        d, spec = self.data, self.spec
        preds = predict_clips(self.model, [d.curated[int(i)] for i in d.val_idx], spec.kind, spec.activation, (0,),
                              spec.pad_mode, inference, self.device)
        if cycle_end:
            self.oof.append(preds)
        score = lwlrap(d.val_truth, preds)
        if self.best is None or score > self.best.lwlrap:
            self.best = BestEpoch(epoch, score, preds)
        log.info("%s fold %d epoch %d: validation lwlrap %.4f", self.name, self.fold, epoch, score)
        return score

    def write_outputs(self, out_dir: Path) -> TrainResult:
        """oof.npz (every cycle's predictions of the held-out clips) and metrics.json."""
        d = self.data
        fnames = np.array([d.curated.fnames[int(i)] for i in d.val_idx])
        best = {} if self.best is None else {"best_preds": self.best.preds, "best_epoch": self.best.epoch}
        with atomic_path(out_dir / "oof.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, fnames=fnames, preds=np.stack(self.oof), targets=d.val_truth,
                     validate_every=self.spec.validate_every, **best)
        per_cycle = self.spec.epochs_per_cycle
        result = TrainResult([float(r["val/lwlrap"]) for r in self.history if r["epoch"] % per_cycle == 0], out_dir)
        metrics = result.metrics
        if self.spec.validate_every == "epoch" and self.best is not None:
            metrics |= {"best_epoch": self.best.epoch, "best_epoch_lwlrap": self.best.lwlrap}
        write_json(out_dir / "metrics.json", metrics)
        return result


DVCLIVE_SIGNAL = "DVCLIVE_STEP_COMPLETED"


def end_live(live: Any) -> None:
    """`live.end()`, whose last act deletes dvclive's step signal file for the VS Code extension. That file is one per
    repository, so folds ending at once in one repository race to delete it (dvclive checks, then removes): the
    loser's FileNotFoundError says nothing about its own run, which is complete."""
    try:
        live.end()
    except FileNotFoundError as exc:
        if Path(exc.filename or "").name != DVCLIVE_SIGNAL:
            raise


def train_fold(spec: ModelSpec, data: FoldData, n_classes: int, out_dir: Path, state_dir: Path,
               inference: InferenceConfig, name: str = "model", fold: int = 0, init_weights: Path | None = None,
               device: str = "auto", progress: bool = True,
               after_cycle: Callable[[int], None] | None = None) -> TrainResult:
    """Train one (model, fold); write snapshot_<c>.pt per cycle, oof.npz, metrics.json and live/ curves (per epoch,
    and the learning rate of every step in live/plots/metrics/lr_step.tsv).

    Resumes from `state_dir` (outside DVC outputs) after an interruption, with the same final weights as an
    uninterrupted run on the CPU (on CUDA, the same up to non-deterministic kernels). `after_cycle(c)` runs on
    rank 0 once cycle c's resume state is saved.
    """
    from dvclive import Live

    key = fingerprint(spec, data, name, fold, init_weights)
    run = FoldTraining(spec, data, n_classes, name, fold, init_weights, device, state_dir, key)
    main = run.world.is_main  # only rank 0 validates, logs and writes
    if main:
        live = Live(str(out_dir / "live"), dvcyaml=False, save_dvc_exp=False, report=None)
        for row in run.history:  # replay what was logged before an interruption, so the curves are complete
            _log_row(live, row)
        if run.lr_steps:
            write_lr_steps(out_dir / "live", run.lr_steps)
        for c in range(1, run.cycle + 1):  # snapshots of cycles finished before an interruption
            publish_snapshot(state_dir, out_dir, c)
    def validate_epoch(row: dict[str, float]) -> None:
        row["val/lwlrap"] = run.validate(inference, int(row["epoch"]), cycle_end=False)

    every_epoch = validate_epoch if main and spec.validate_every == "epoch" else None
    while run.cycle < spec.cycles:
        rows = run.train_cycle(progress, every_epoch)
        if main:
            rows[-1]["val/lwlrap"] = run.validate(inference, int(rows[-1]["epoch"]))
            for row in rows:
                _log_row(live, row)
            run.history.extend(rows)
            write_lr_steps(out_dir / "live", run.lr_steps)
            resume = ResumeState(run.cycle, run.optimizer.state_dict(), run.scheduler.state_dict(), run.history, run.oof,
                                 run.lr_steps, run.best)
            save_cycle(run.model, resume, state_dir, out_dir, key)
            if after_cycle is not None:
                after_cycle(run.cycle)
        run.world.barrier()
    if main:
        end_live(live)
        result = run.write_outputs(out_dir)
        shutil.rmtree(state_dir)  # finished: a later run (e.g. after a code change) must not resume from it
    run.world.barrier()  # every rank leaves together: none exits while another still holds the group's connections
    return result if main else TrainResult([], out_dir)


def fits(model: nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    """Whether `weights` hold exactly the model's tensors, with their shapes."""
    own = model.state_dict()
    return (isinstance(weights, dict) and own.keys() == weights.keys()
            and all(isinstance(weights[k], torch.Tensor) and own[k].shape == weights[k].shape for k in own))


def dropout_seed(spec: ModelSpec, name: str, fold: int, cycle: int, rank: int) -> int:
    """The seed of a cycle's dropout masks on one rank: each rank draws its own masks (rank 0 those of a lone
    process), as training on one GPU with the whole batch would."""
    return spec.seed_for(name, fold, cycle, "dropout", *([rank] if rank else []))


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

