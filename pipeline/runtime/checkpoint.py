"""The train stage's checkpoint ``last.pt``: one typed, versioned record, read ``weights_only``.

Written after every epoch by ``train`` (and read back by ``train.resume``), read by evaluate,
register and the ablation. It holds tensors and plain containers only, so ``torch.load(...,
weights_only=True)`` never unpickles code; its network is rebuilt by name from its ``ModelSpec``
(``pipeline.runtime.net.net_from_values``), never from a callable it names. Besides the weights it
keeps only what its readers need, typed: the model (net values, clip geometry, frame format,
precision), the schedule (what a resume compares) and the md5 of the run's whole config.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import StageError
from pipeline.core.files import write_atomic
from pipeline.runtime.device import ModelInput
from pipeline.runtime.net import net_from_values

CHECKPOINT_FILE = "last.pt"
RUN_ID_FILE = "run_id.txt"  # beside the checkpoint: the MLflow run of the training
FORMAT = "a2nets.checkpoint"
# bump when a field changes meaning; older files are refused, not guessed at
FORMAT_VERSION = 2  # 2: typed model and schedule records instead of the whole config
RETRAIN = "retrain with `python -m pipeline.train`"


def _checked(cls: type, values: Any, kinds: Mapping[str, Any]) -> Any:
    """``cls(**values)`` when ``values`` has exactly ``cls``'s fields, each of its kind; TypeError
    otherwise. A kind is a type (int never a bool), a tuple of types, or ``"floats"`` (a tuple of numbers)."""
    names = [f.name for f in fields(cls)]
    if not isinstance(values, Mapping) or sorted(values) != sorted(names):
        raise TypeError(f"{cls.__name__} must hold {names}")
    for name in names:
        value, kind = values[name], kinds[name]
        if kind == "floats":
            ok = isinstance(value, (tuple, list)) and all(_is_number(v) for v in value)
            values = {**values, name: tuple(float(v) for v in value) if ok else value}
        elif kind == (int, float):  # a number, read as a float (an int in a hand-made file is one too)
            ok = _is_number(value)
            values = {**values, name: float(value) if ok else value}
        else:
            ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _kinds(kind))
        if not ok:
            raise TypeError(f"{cls.__name__}.{name} is {type(value).__name__}")
    return cls(**values)


def _kinds(kind: Any) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClipGeometry:
    """The clips the network was trained on: frames, their stride, the square crop."""

    num_frames: int
    stride: int
    crop_size: int

    @classmethod
    def from_dict(cls, values: Any) -> ClipGeometry:
        return _checked(cls, values, dict.fromkeys(("num_frames", "stride", "crop_size"), int))


@dataclass(frozen=True)
class FrameFormat:
    """How the training frames were made (``data.fps``, ``short_side``, ``jpeg_quality``) and
    normalised (``data.mean``, ``std``): what evaluation and serving do again."""

    fps: float
    short_side: int
    jpeg_quality: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_dict(cls, values: Any) -> FrameFormat:
        kinds = {"fps": (int, float), "short_side": int, "jpeg_quality": int, "mean": "floats", "std": "floats"}
        return _checked(cls, values, kinds)


@dataclass(frozen=True)
class ModelSpec:
    """What builds, feeds and runs the trained network: its ``model.net`` values (a model name and
    plain keyword values of ``a2model.build_model``), clip geometry, frame format, autocast."""

    net: dict[str, Any]
    clip: ClipGeometry
    frames: FrameFormat
    amp: str  # bf16 | fp32

    @property
    def name(self) -> str:
        return str(self.net.get("name"))

    def model_input(self, channels_last: bool = False) -> ModelInput:
        """How a batch of this model's uint8 frames becomes its input."""
        return ModelInput(self.frames.mean, self.frames.std, channels_last)

    @classmethod
    def from_dict(cls, values: Any) -> ModelSpec:
        if not isinstance(values, Mapping):
            raise TypeError("model must be a mapping")
        typed = {
            **values,
            "clip": ClipGeometry.from_dict(values.get("clip")),
            "frames": FrameFormat.from_dict(values.get("frames")),
        }
        return _checked(cls, typed, {"net": dict, "clip": ClipGeometry, "frames": FrameFormat, "amp": str})


@dataclass(frozen=True)
class Schedule:
    """What shapes a training's learning-rate curve (``train.lr``, ``warmup_epochs``, ``epochs``,
    ``batch_size``): a resume says when its config changes one."""

    lr: float
    warmup_epochs: float
    epochs: int
    batch_size: int

    def changes_from(self, before: Schedule) -> list[str]:
        """``train.lr 0.1 → 0.2``-style lines for the values that differ from ``before``."""
        return [
            f"train.{f.name} {getattr(before, f.name)} → {getattr(self, f.name)}"
            for f in fields(self)
            if getattr(before, f.name) != getattr(self, f.name)
        ]

    @classmethod
    def from_dict(cls, values: Any) -> Schedule:
        kinds = {"lr": (int, float), "warmup_epochs": (int, float), "epochs": int, "batch_size": int}
        return _checked(cls, values, kinds)


@dataclass(frozen=True)
class TrainedNet:
    """A checkpoint's network ready to score (eval mode, on its device), with what feeds it."""

    net: nn.Module
    model: ModelSpec
    classes: list[str]
    device: torch.device
    unfinished: bool  # its training stopped before its last epoch (allowed by the caller)


@dataclass
class Checkpoint:
    """A training's state after ``epoch`` epochs: weights, optimiser, RNGs and its record."""

    weights: dict[str, torch.Tensor]  # the bare network's state dict
    model: ModelSpec
    schedule: Schedule  # the config's, when written (the learning rate is always the running config's)
    config_md5: str  # of the run's whole resolved config (pipeline.core.config.config_md5): its lineage
    classes: list[str]
    epoch: int
    history: list[dict[str, float | None]] = field(default_factory=list)  # one metrics row per epoch
    mlflow_run_id: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def clip(self) -> ClipGeometry:
        """The clip geometry the network was trained on."""
        return self.model.clip

    @property
    def epochs(self) -> int:
        """The epochs its config asked for."""
        return self.schedule.epochs

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
        fields_ = {key: record[key] for key in cls.__dataclass_fields__ if key in record}
        try:
            fields_ |= {
                "model": ModelSpec.from_dict(record["model"]),
                "schedule": Schedule.from_dict(record["schedule"]),
            }
            checkpoint = cls(**fields_)
            _check_types(checkpoint)
        except (TypeError, KeyError, ValueError) as err:
            raise StageError(f"{source}: malformed checkpoint ({err}); {RETRAIN}") from None
        return checkpoint

    def build_net(self, source: Path) -> nn.Module:
        """The trained network, built by name from its ``ModelSpec`` and loaded with the weights."""
        net = net_from_values(self.model.net, len(self.classes), str(source))
        try:
            net.load_state_dict(self.weights)
        except (RuntimeError, TypeError) as err:
            raise StageError(
                f"{source}: weights do not fit {self.model.net.get('name')!r} ({str(err).splitlines()[0]})"
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

    def trained_net(self, source: Path, device: torch.device, allow_key: str, allowed: bool) -> TrainedNet:
        """The network to score with, built once (unfinished ones refused unless ``allowed``)."""
        unfinished = self.refuse_unfinished(source, allow_key, allowed)
        net = self.build_net(source).to(device).eval()
        return TrainedNet(net, self.model, list(self.classes), device, unfinished)


def _check_types(checkpoint: Checkpoint) -> None:
    """TypeError/ValueError unless the fields have the types and values the readers rely on."""
    if not isinstance(checkpoint.weights, Mapping):
        raise TypeError("weights must be a mapping")
    if not isinstance(checkpoint.classes, list) or not all(isinstance(c, str) for c in checkpoint.classes):
        raise TypeError("classes must be a list of names")
    if not isinstance(checkpoint.epoch, int) or isinstance(checkpoint.epoch, bool):
        raise TypeError("epoch must be an integer")
    if not isinstance(checkpoint.config_md5, str):
        raise TypeError("config_md5 must be a string")
    if checkpoint.epochs < 1 or not checkpoint.model.net.get("name"):
        raise ValueError("schedule.epochs must be >= 1 and model.net name a model")
