"""SGD with the paper's recipe: weight decay on weights only, linear warm-up, then a cosine to 0.

The learning rate is a pure function of the config and the progress (as PySlowFast's
``lr_policy``): no scheduler state is kept, so a resumed or extended run follows the schedule of
the config it runs with from the checkpoint's step, and a resume with the same config takes
exactly the steps of an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def parameter_groups(
    model: nn.Module, weight_decay: float, pretrained: Collection[str] = (), pretrained_scale: float = 1.0
) -> list[dict[str, Any]]:
    """SGD groups: weight decay on conv/linear weights, none on norm parameters and biases; the
    parameters named in ``pretrained`` (loaded by ``model.init``) in groups of their own whose
    learning rate is ``pretrained_scale`` times the schedule's (``lr_scale``, read by ``set_lr``)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in pretrained, param.ndim > 1), []).append(param)
    return [
        {
            "params": groups.get((loaded, decays), []),
            "weight_decay": weight_decay if decays else 0.0,
            "lr_scale": pretrained_scale if loaded else 1.0,
        }
        for loaded in (False, True)
        for decays in (True, False)
        if (loaded, decays) in groups or not loaded
    ]


def sgd(
    model: nn.Module,
    lr: float,
    momentum: float,
    weight_decay: float,
    pretrained: Collection[str] = (),
    pretrained_scale: float = 1.0,
) -> torch.optim.SGD:
    """SGD with momentum over ``parameter_groups``."""
    groups = parameter_groups(model, weight_decay, pretrained, pretrained_scale)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


@dataclass(frozen=True)
class WarmupCosine:
    """The per-iteration learning rate: ``(step + 1) / warmup_steps`` of ``base_lr`` while warming
    up, then half a cosine from ``base_lr`` at ``warmup_steps`` to 0 at ``total_steps`` (and 0 after)."""

    base_lr: float
    warmup_steps: int
    total_steps: int

    @classmethod
    def of_epochs(cls, base_lr: float, warmup_epochs: float, epochs: int, steps_per_epoch: int) -> WarmupCosine:
        """The schedule of ``train.lr``, ``train.warmup_epochs`` and ``train.epochs`` at ``steps_per_epoch``."""
        return cls(base_lr, round(warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)

    def lr(self, step: int) -> float:
        """The learning rate of iteration ``step`` (0-based, counted from the training's start)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr`` (times its ``lr_scale``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
