"""The train stage's checkpoint ``last.pt``: one typed, versioned record, read ``weights_only``.

Written after every epoch by ``train`` (and read back by ``train.resume``), read by evaluate,
register and the ablation. It holds tensors and plain containers only, so ``torch.load(...,
weights_only=True)`` never unpickles code; its network is rebuilt by name from the run's own
resolved config (``pipeline.training.net.net_from_values``), never from a callable it names.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.training.net import net_from_values

CHECKPOINT_FILE = "last.pt"
RUN_ID_FILE = "run_id.txt"  # beside the checkpoint: the MLflow run of the training
FORMAT = "a2nets.checkpoint"
FORMAT_VERSION = 1  # bump when a field changes meaning; older files are refused, not guessed at
CLIP_KEYS = {"num_frames", "stride", "crop_size"}
RETRAIN = "retrain with `python -m pipeline.train`"


@dataclass
class Checkpoint:
    """A training's state after ``epoch`` epochs: weights, optimiser, RNGs and its record."""

    weights: dict[str, torch.Tensor]  # the bare network's state dict
    config: dict[str, Any]  # the run's resolved config (plain containers)
    classes: list[str]
    epoch: int
    history: list[dict[str, float | None]] = field(default_factory=list)  # one metrics row per epoch
    mlflow_run_id: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)  # the schedule is the config's (training.optim)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return str(self.config["model"]["net"]["name"])

    @property
    def clip(self) -> dict[str, int]:
        """The clip geometry the network was trained on: ``num_frames``, ``stride``, ``crop_size``."""
        return {key: int(value) for key, value in self.config["model"]["clip"].items()}

    @property
    def epochs(self) -> int:
        """The epochs its config asked for."""
        return int(self.config["train"]["epochs"])

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically (temp name, then rename), tagged with the format version."""
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, buffer)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint with ``weights_only=True``; a missing, old or foreign file is a StageError."""
        path = Path(path)
        if not path.is_file():
            raise StageError(f"checkpoint {path} not found; run `python -m pipeline.train` first (train.out_dir)")
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... on foreign bytes
            raise StageError(f"{path} cannot be read as a checkpoint ({type(err).__name__}); {RETRAIN}") from None
        return cls.from_record(record, path)

    @classmethod
    def from_record(cls, record: Any, source: Path) -> Checkpoint:
        """The checkpoint of a loaded record, checked: the format, its version and the fields' types."""
        if not isinstance(record, Mapping) or record.get("format") != FORMAT:
            raise StageError(f"{source} is not a checkpoint of the train stage; {RETRAIN}")
        if record.get("format_version") != FORMAT_VERSION:
            raise StageError(
                f"{source} is checkpoint format {record.get('format_version')!r}, this code reads "
                f"{FORMAT_VERSION}; {RETRAIN}"
            )
        fields = {key: record[key] for key in cls.__dataclass_fields__ if key in record}
        try:
            checkpoint = cls(**fields)
            _check_types(checkpoint)
        except (TypeError, KeyError, ValueError) as err:
            raise StageError(f"{source}: malformed checkpoint ({err}); {RETRAIN}") from None
        return checkpoint

    def build_net(self, source: Path) -> nn.Module:
        """The trained network, built by name from the config's values and loaded with the weights."""
        net_values = self.config["model"]["net"]
        net = net_from_values(net_values, len(self.classes), str(source))
        try:
            net.load_state_dict(self.weights)
        except (RuntimeError, TypeError) as err:
            raise StageError(
                f"{source}: weights do not fit {net_values.get('name')!r} ({str(err).splitlines()[0]})"
            ) from None
        return net

    def refuse_unfinished(self, source: Path, allow_key: str, allowed: bool) -> bool:
        """StageError for an unfinished training unless ``allow_key`` is true; True when unfinished."""
        if self.finished:
            return False
        if not allowed:
            raise StageError(
                f"{source} is epoch {self.epoch} of {self.epochs}: its training did not finish; "
                f"resume it (train.resume=true) or set {allow_key}=true to use it anyway"
            )
        return True


def _check_types(checkpoint: Checkpoint) -> None:
    """TypeError/KeyError unless the fields have the types the readers rely on."""
    if not isinstance(checkpoint.weights, Mapping) or not isinstance(checkpoint.config, Mapping):
        raise TypeError("weights and config must be mappings")
    if not isinstance(checkpoint.classes, list) or not all(isinstance(c, str) for c in checkpoint.classes):
        raise TypeError("classes must be a list of names")
    if not isinstance(checkpoint.epoch, int):
        raise TypeError("epoch must be an integer")
    if set(checkpoint.clip) != CLIP_KEYS or checkpoint.epochs < 1 or not checkpoint.model_name:
        raise ValueError(f"config.model.clip must hold {sorted(CLIP_KEYS)}, config.train.epochs be >= 1")
