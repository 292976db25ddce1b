"""``train(cfg)``: build loaders, network, optimiser and schedule, resume, then fit epoch by epoch.

One process, or many under ``torchrun`` (DDP; NCCL on GPU, gloo on CPU). ``train.batch_size`` is
the *global* batch: each of the W processes takes ``batch_size // W`` clips of the same global
batch a single process would take and BatchNorm statistics are synchronised, so W processes
reproduce one process up to float rounding. After every epoch the checkpoint is written first,
then the epoch's metrics (MLflow and ``train.metrics_csv``), so a kill never logs an epoch that
a resume would train again; on CPU a resumed run ends with exactly an uninterrupted run's weights.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pipeline.core.config import classes_file
from pipeline.core.errors import ConfigError
from pipeline.core.files import write_atomic
from pipeline.data.kinetics import load_classes
from pipeline.training.checkpoint import CHECKPOINT_FILE, RUN_ID_FILE, Checkpoint
from pipeline.training.distributed import DistInfo, init_distributed, shutdown_distributed, sync_batchnorm
from pipeline.training.loaders import TrainingData, training_data
from pipeline.training.loop import clip_top1, train_epoch
from pipeline.training.net import build_net, resolve_device
from pipeline.training.optim import WarmupCosine, sgd
from pipeline.training.run_record import (
    backfill_epoch_metrics,
    log_epoch_metrics,
    log_run_start,
    mark_abandoned_run,
    mlflow_run,
    write_metrics_csv,
)
from pipeline.training.seeding import epoch_seed, restore_rng_state, rng_state, seed_everything


@dataclass
class TrainState:
    """What an epoch changes and a checkpoint keeps: network, optimiser, progress (and the schedule,
    which is the config's, never the checkpoint's)."""

    net: nn.Module  # the bare network (DDP and torch.compile wrap it, they never replace it)
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    epoch: int = 0
    history: list[dict[str, float | None]] = field(default_factory=list)
    run_id: str | None = None

    def checkpoint(self, cfg: DictConfig, classes: list[str]) -> Checkpoint:
        return Checkpoint(
            weights=self.net.state_dict(),
            config=OmegaConf.to_container(cfg, resolve=True),
            classes=list(classes),
            epoch=self.epoch,
            history=self.history,
            mlflow_run_id=self.run_id,
            optimizer=self.optimizer.state_dict(),
            rng=rng_state(),
        )

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Continue where ``checkpoint`` ended: weights, optimiser, RNGs, history, run; the learning
        rate follows ``self.schedule`` from the checkpoint's step."""
        self.net.load_state_dict(checkpoint.weights)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        restore_rng_state(checkpoint.rng)
        self.epoch, self.history, self.run_id = checkpoint.epoch, list(checkpoint.history), checkpoint.mlflow_run_id


def train(cfg: DictConfig) -> Path:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.train``; return the checkpoint path."""
    tc = cfg.train
    device = resolve_device(tc.device)
    classes = load_classes(classes_file(cfg.data))
    info = init_distributed(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if tc.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {info.world_size} processes")
        seed_everything(tc.seed, device)
        data = training_data(cfg, info, device)
        state = initial_state(cfg, len(classes), len(data.loader), device, info)
        checkpoint_path = Path(tc.out_dir) / CHECKPOINT_FILE
        if tc.resume and checkpoint_path.is_file():
            state.resume_from(resumable(checkpoint_path, cfg))
        fit(cfg, state, data, wrap(state.net, device, info, tc.compile), classes, device, info)
        return checkpoint_path
    finally:
        shutdown_distributed()


def initial_state(
    cfg: DictConfig, num_classes: int, steps_per_epoch: int, device: torch.device, info: DistInfo
) -> TrainState:
    """A fresh network on ``device`` (synchronised BatchNorm under DDP), SGD and the config's schedule."""
    tc = cfg.train
    net = build_net(cfg.model.net, num_classes)
    if info.distributed:
        net = sync_batchnorm(net, device.type)
    net.to(device)
    if tc.channels_last:
        net.to(memory_format=torch.channels_last_3d)
    optimizer = sgd(net, tc.lr, tc.momentum, tc.weight_decay)
    schedule = WarmupCosine.of_epochs(tc.lr, tc.warmup_epochs, tc.epochs, steps_per_epoch)
    return TrainState(net, optimizer, schedule)


SCHEDULE_KEYS = ("lr", "warmup_epochs", "epochs", "batch_size")  # train.* that shape the learning rate curve


def resumable(path: Path, cfg: DictConfig) -> Checkpoint:
    """The checkpoint to resume from; a ConfigError when it holds another model. A changed
    schedule is said in one line: the run goes on along this config's schedule, never the old one's."""
    checkpoint = Checkpoint.load(path)
    if checkpoint.model_name != cfg.model.net.name:
        raise ConfigError(
            f"{path} holds {checkpoint.model_name!r}, not {cfg.model.net.name!r}; "
            "set train.resume=false or another train.out_dir"
        )
    before = checkpoint.config["train"]
    changed = [f"train.{k} {before.get(k)} → {cfg.train[k]}" for k in SCHEDULE_KEYS if before.get(k) != cfg.train[k]]
    if changed:
        print(
            f"note: resuming after epoch {checkpoint.epoch} with {', '.join(changed)}: "
            "the learning rate follows this config's schedule from there"
        )
    return checkpoint


def wrap(net: nn.Module, device: torch.device, info: DistInfo, compile_model: bool) -> nn.Module:
    """The module the loop calls: ``net`` under DDP when distributed, compiled when asked."""
    model: nn.Module = net
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model and device.type == "cpu" and not cpp_compiler():
        print("warning: train.compile=true needs a C++ compiler on CPU and none is on PATH; training uncompiled")
        return model
    return torch.compile(model) if compile_model else model


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call (``$CXX``, else c++/g++/clang++ on PATH)."""
    return os.environ.get("CXX") or next(filter(None, map(shutil.which, ("c++", "g++", "clang++"))), None)


def fit(
    cfg: DictConfig,
    state: TrainState,
    data: TrainingData,
    model: nn.Module,
    classes: list[str],
    device: torch.device,
    info: DistInfo,
) -> None:
    """Train from ``state.epoch`` to ``train.epochs``; the main process checkpoints and logs."""
    tc = cfg.train
    out_dir = Path(tc.out_dir)
    if info.is_main and state.epoch == 0:
        mark_abandoned_run(out_dir / RUN_ID_FILE, cfg.mlflow.experiment)
    with mlflow_run(cfg, state.run_id, info.is_main) as state.run_id:
        if info.is_main:
            write_atomic(out_dir / RUN_ID_FILE, f"{state.run_id}\n")
            if state.epoch == 0:
                clip = cfg.model.clip
                log_run_start(cfg, state.net, (3, clip.num_frames, clip.crop_size, clip.crop_size))
            else:
                backfill_epoch_metrics(state.run_id, state.history)
        while state.epoch < tc.epochs:
            row = run_epoch(cfg, state, data, model, device, info)
            state.epoch += 1
            state.history.append(row)
            if info.is_main:  # the checkpoint first: a kill before it leaves no metric of this epoch
                state.checkpoint(cfg, classes).save(out_dir / CHECKPOINT_FILE)
                log_epoch_metrics(row)
                write_metrics_csv(Path(tc.metrics_csv), state.history)
                print(" ".join(f"{k}={v:.4g}" for k, v in row.items() if v is not None), flush=True)
        if info.is_main and state.history:
            mlflow.log_artifact(str(tc.metrics_csv))


def run_epoch(
    cfg: DictConfig, state: TrainState, data: TrainingData, model: nn.Module, device: torch.device, info: DistInfo
) -> dict[str, float | None]:
    """Epoch ``state.epoch + 1``: its seeds, one pass over the data, validation when due; its metrics row."""
    tc, epoch = cfg.train, state.epoch
    data.set_epoch(epoch)
    torch.manual_seed(epoch_seed(tc.seed, epoch, info.rank))
    row: dict[str, float | None] = {"epoch": epoch + 1}
    steps = len(data.loader)
    row |= train_epoch(
        model,
        data.loader,
        state.optimizer,
        state.schedule,
        epoch * steps,
        device,
        cfg,
        info,
        f"epoch {epoch + 1}/{tc.epochs}",
    )
    row["lr"] = state.schedule.lr((epoch + 1) * steps)  # the next step's, as a scheduler would leave it
    validate_now = data.val_loader is not None and ((epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs)
    row["val_clip_top1"] = clip_top1(state.net, data.val_loader, device, cfg, info) if validate_now else None
    return row
