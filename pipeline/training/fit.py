"""``train(settings)``: build loaders, network, optimiser and schedule, resume, then fit epoch by epoch.

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
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.files import write_atomic
from pipeline.data.kinetics import load_classes
from pipeline.runtime.checkpoint import CHECKPOINT_FILE, RUN_ID_FILE, Checkpoint, Schedule
from pipeline.runtime.device import resolve_device
from pipeline.runtime.net import build_net
from pipeline.tracking.run_record import (
    backfill_epoch_metrics,
    log_epoch_metrics,
    log_run_start,
    mark_abandoned_run,
    mlflow_run,
    write_metrics_csv,
)
from pipeline.training.distributed import DistInfo, init_distributed, shutdown_distributed, sync_batchnorm
from pipeline.training.init import InitRecord, load_initial_weights
from pipeline.training.loaders import TrainingData, training_data
from pipeline.training.loop import clip_top1, train_epoch
from pipeline.training.optim import WarmupCosine, sgd
from pipeline.training.seeding import epoch_seed, restore_rng_state, rng_state, seed_everything
from pipeline.training.settings import TrainSettings


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
    init: InitRecord | None = None  # the weights model.init started it from

    def checkpoint(self, settings: TrainSettings, classes: list[str]) -> Checkpoint:
        return Checkpoint(
            weights=self.net.state_dict(),
            model=settings.model,
            schedule=settings.schedule,
            config_md5=settings.run.config_md5,
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


def train(settings: TrainSettings) -> Path:
    """Train ``settings.model`` on ``settings.shards_dir``; return the checkpoint path."""
    s = settings
    device = resolve_device(s.device)
    classes = load_classes(s.classes_file)
    info = init_distributed(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if s.schedule.batch_size % info.world_size:
            raise ConfigError(
                f"train.batch_size={s.schedule.batch_size} is not divisible by the {info.world_size} processes"
            )
        seed_everything(s.seed, device)
        data = training_data(s, info, device)
        state = initial_state(s, len(classes), len(data.loader), device, info)
        checkpoint_path = s.out_dir / CHECKPOINT_FILE
        if s.resume and checkpoint_path.is_file():
            state.resume_from(resumable(checkpoint_path, s.model.name, s.schedule))
        fit(s, state, data, wrap(state.net, device, info, s.compile), classes, device, info)
        return checkpoint_path
    finally:
        shutdown_distributed()


def initial_state(
    settings: TrainSettings, num_classes: int, steps_per_epoch: int, device: torch.device, info: DistInfo
) -> TrainState:
    """A network on ``device`` (synchronised BatchNorm under DDP), He-initialised or started from
    ``model.init``'s weights, SGD (the loaded part at ``lr_backbone_scale``) and the config's schedule."""
    net = build_net(settings.model.net, num_classes)
    init = load_initial_weights(net, settings.init, verbose=info.is_main)
    if info.distributed:
        net = sync_batchnorm(net, device.type)
    net.to(device)
    if settings.channels_last:
        net.to(memory_format=torch.channels_last_3d)
    opt, plan = settings.optimiser, settings.schedule
    pretrained = init.loaded if init else ()
    optimizer = sgd(net, plan.lr, opt.momentum, opt.weight_decay, pretrained, opt.lr_backbone_scale)
    schedule = WarmupCosine.of_epochs(plan.lr, plan.warmup_epochs, plan.epochs, steps_per_epoch)
    return TrainState(net, optimizer, schedule, init=init)


def resumable(path: Path, model_name: str, schedule: Schedule) -> Checkpoint:
    """The checkpoint to resume from; a ConfigError when it holds another model. A changed
    schedule is said in one line: the run goes on along this config's schedule, never the old one's."""
    checkpoint = Checkpoint.load(path)
    if checkpoint.model_name != model_name:
        raise ConfigError(
            f"{path} holds {checkpoint.model_name!r}, not {model_name!r}; "
            "set train.resume=false or another train.out_dir"
        )
    changed = schedule.changes_from(checkpoint.schedule)
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
    settings: TrainSettings,
    state: TrainState,
    data: TrainingData,
    model: nn.Module,
    classes: list[str],
    device: torch.device,
    info: DistInfo,
) -> None:
    """Train from ``state.epoch`` to the schedule's epochs; the main process checkpoints and logs."""
    s = settings
    if info.is_main and state.epoch == 0:
        mark_abandoned_run(s.out_dir / RUN_ID_FILE, s.run.experiment)
    with mlflow_run(s.run, state.run_id, info.is_main) as state.run_id:
        if info.is_main:
            write_atomic(s.out_dir / RUN_ID_FILE, f"{state.run_id}\n")
            if state.epoch == 0:
                log_run_start(s.run, state.net, state.init.tags() if state.init else {})
            else:
                backfill_epoch_metrics(state.run_id, state.history)
        while state.epoch < s.schedule.epochs:
            row = run_epoch(s, state, data, model, device, info)
            state.epoch += 1
            state.history.append(row)
            if info.is_main:  # the checkpoint first: a kill before it leaves no metric of this epoch
                state.checkpoint(s, classes).save(s.out_dir / CHECKPOINT_FILE)
                log_epoch_metrics(row)
                write_metrics_csv(s.metrics_csv, state.history)
                print(" ".join(f"{k}={v:.4g}" for k, v in row.items() if v is not None), flush=True)
        if info.is_main and state.history:
            mlflow.log_artifact(str(s.metrics_csv))


def run_epoch(
    settings: TrainSettings,
    state: TrainState,
    data: TrainingData,
    model: nn.Module,
    device: torch.device,
    info: DistInfo,
) -> dict[str, float | None]:
    """Epoch ``state.epoch + 1``: its seeds, one pass over the data, validation when due; its metrics row."""
    s, epoch, epochs = settings, state.epoch, settings.schedule.epochs
    data.set_epoch(epoch)
    torch.manual_seed(epoch_seed(s.seed, epoch, info.rank))
    row: dict[str, float | None] = {"epoch": epoch + 1}
    steps = len(data.loader)
    model_input, amp = s.model.model_input(s.channels_last), s.model.amp
    row |= train_epoch(
        model,
        data.loader,
        state.optimizer,
        state.schedule,
        epoch * steps,
        device,
        model_input,
        amp,
        s.optimiser,
        info,
        f"epoch {epoch + 1}/{epochs}",
    )
    row["lr"] = state.schedule.lr((epoch + 1) * steps)  # the next step's, as a scheduler would leave it
    validate_now = data.val_loader is not None and ((epoch + 1) % s.val_every == 0 or epoch + 1 == epochs)
    validation = clip_top1(state.net, data.val_loader, device, model_input, amp, info) if validate_now else None
    row["val_clip_top1"] = validation
    return row
