"""Process-group plumbing for torchrun (DDP), and a BatchNorm that syncs on CPU too.

``torchrun`` (or any launcher) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them training runs as one process and nothing here communicates.

Why a BatchNorm of our own: DDP averages gradients but not BatchNorm batch statistics, so two
processes with half the batch each normalise differently from one process with the whole
batch. ``torch.nn.SyncBatchNorm`` fixes that but refuses CPU tensors ("expected input tensor to
be on GPU"), so on CPU (gloo) ``SyncBatchNorm`` below all-reduces per-channel sum, sum of
squares and count with the autograd-aware ``torch.distributed.nn.functional.all_reduce``: the
forward and the backward then equal those of BatchNorm over the global batch. On CUDA the
fused ``torch.nn.SyncBatchNorm`` is used instead.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Its suggested replacement (_functional_collectives.all_reduce) has no autograd; this one does.
warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_reduce is deprecated", FutureWarning)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size and rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that logs, writes checkpoints and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by the launcher's env vars (NCCL on CUDA, else gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend, rank=info.rank, world_size=world_size)
    return info


def shutdown_distributed() -> None:
    """Leave the process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over all processes (identity for one process)."""
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics cover the batch of every process (any backend).

    Written here because ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so gloo (CPU) DDP
    would otherwise normalise with each process's half batch.

    Input ``(N, C, ...)``. In training, per-channel ``sum(x)``, ``sum(x²)`` and the count are
    all-reduced in one call; gradients flow back through the all-reduce. In eval mode, or outside
    a process group, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, input.dim()))
        count = torch.full((1,), input.numel() / input.size(1), dtype=input.dtype, device=input.device)
        stats = all_reduce(torch.cat([input.sum(dims), (input * input).sum(dims), count]))
        channels = input.size(1)
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                unbiased = var * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        shape = (1, channels) + (1,) * (input.dim() - 2)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm replaced by this class (same parameters/buffers)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            synced = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            synced.load_state_dict(module.state_dict())
            synced.train(module.training)
            return synced
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module


def sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """Make BatchNorm statistics global across processes: fused on CUDA, ours on CPU."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return SyncBatchNorm.convert(model)
