"""One training epoch and the per-epoch validation (torchvision's ``train_one_epoch``/``evaluate``)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.runtime.device import ModelInput, autocast
from pipeline.training.distributed import DistInfo, all_reduce_sum
from pipeline.training.optim import WarmupCosine, set_lr
from pipeline.training.settings import Optimiser

PROGRESS_EVERY = 10  # steps between progress-bar updates (each one syncs the GPU)


@torch.no_grad()
def clip_top1(
    net: nn.Module, loader: DataLoader, device: torch.device, model_input: ModelInput, amp: str, info: DistInfo
) -> float:
    """Top-1 of one centre clip per video over this process's share of ``loader``, summed over processes."""
    net.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        with autocast(device, amp):
            logits = net(model_input(batch["frames"], device))
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
    model_input: ModelInput,
    amp: str,
    optimiser: Optimiser,
    info: DistInfo,
    desc: str,
) -> dict[str, float]:
    """One pass over ``loader``, iteration ``i`` at the learning rate ``schedule.lr(first_step + i)``,
    under ``amp`` autocast, with ``optimiser``'s label smoothing and gradient clipping; returns the
    global mean loss, top-1, the epoch's seconds and clips/s."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, clips
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not info.is_main, dynamic_ncols=True, leave=False)
    for step, batch in enumerate(bar):
        clips = model_input(batch["frames"], device)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=optimiser.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimiser.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), optimiser.grad_clip)
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
