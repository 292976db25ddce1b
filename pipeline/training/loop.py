"""One training epoch and the per-epoch validation (torchvision's ``train_one_epoch``/``evaluate``)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.data.transforms import normalize
from pipeline.training.distributed import DistInfo, all_reduce_sum
from pipeline.training.optim import WarmupCosine, set_lr

PROGRESS_EVERY = 10  # steps between progress-bar updates (each one syncs the GPU)


def to_model_input(batch_frames: torch.Tensor, device: torch.device, cfg: DictConfig) -> torch.Tensor:
    """uint8 ``(N, V, C, T, H, W)`` → normalised float ``(N·V, C, T, H, W)`` on ``device``."""
    clips = normalize(batch_frames.to(device, non_blocking=True).flatten(0, 1), cfg.data.mean, cfg.data.std)
    if cfg.train.channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    return clips


def autocast(device: torch.device, amp: str) -> Any:
    """bf16 autocast on ``device`` (CUDA or CPU) when ``train.amp=bf16``; nothing for ``fp32``."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def clip_top1(net: nn.Module, loader: DataLoader, device: torch.device, cfg: DictConfig, info: DistInfo) -> float:
    """Top-1 of one centre clip per video over this process's share of ``loader``, summed over processes."""
    net.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        with autocast(device, cfg.train.amp):
            logits = net(to_model_input(batch["frames"], device, cfg))
        counts += torch.tensor([(logits.argmax(1).cpu() == batch["label"]).sum().item(), len(batch["label"])])
    net.train()
    counts = all_reduce_sum(counts, info)
    return float(counts[0] / counts[1]) if counts[1] else float("nan")


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    first_step: int,
    device: torch.device,
    cfg: DictConfig,
    info: DistInfo,
    desc: str,
) -> dict[str, float]:
    """One pass over ``loader``, iteration ``i`` at the learning rate ``schedule.lr(first_step + i)``;
    returns the global mean loss, top-1, the epoch's seconds and clips/s."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, clips
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not info.is_main, dynamic_ncols=True, leave=False)
    for step, batch in enumerate(bar):
        clips = to_model_input(batch["frames"], device, cfg)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast(device, cfg.train.amp):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.train.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        set_lr(optimizer, schedule.lr(first_step + step))
        optimizer.step()
        totals += torch.stack(
            [
                loss.detach().double() * len(labels),
                (logits.argmax(1) == labels).sum().double(),
                totals.new_tensor(len(labels)),
            ]
        )
        if info.is_main and (step % PROGRESS_EVERY == 0 or step == len(loader) - 1):
            rate = len(labels) * (step + 1) * info.world_size / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}", clips_s=f"{rate:.1f}"
            )
    elapsed = time.perf_counter() - start
    totals = all_reduce_sum(totals, info).cpu()
    return {
        "train_loss": float(totals[0] / totals[2]),
        "train_top1": float(totals[1] / totals[2]),
        "epoch_time": elapsed,
        "clips_per_s": float(totals[2]) / elapsed,
    }
