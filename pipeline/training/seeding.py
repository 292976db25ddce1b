"""Seeds and RNG state of a training, so that a resumed run draws what an uninterrupted one draws."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch

from pipeline.core.seeds import derived_seed


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed the global RNGs; deterministic kernels on CPU, cuDNN autotuning on GPU."""
    random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global torch RNG (dropout) for one epoch of one process.

    Re-seeding every epoch makes a resumed run draw what an uninterrupted one draws, and
    different ranks draw different dropout masks for their different clips.
    """
    return derived_seed(seed, epoch, rank)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive Python's RNG from the worker's torch seed."""
    random.seed(torch.initial_seed() % 2**32)


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": torch.tensor(internal, dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo ``rng_state``."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
