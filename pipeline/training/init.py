"""Starting a training from other weights (``model.init``): a new run, unlike ``train.resume``.

``model.init.weights`` is a torchvision 2-D ResNet state dict (``resnet50-*.pth``, inflated over
time with ``model.init.inflate``), a project checkpoint (``last.pt``), or a registered version
(``models:/name/3``, ``models:/name@staging``: its pt2 program's weights). Files are read with
``weights_only=True`` and a pt2 without pickle, so a file that names code is refused, not run.
Keys matching ``model.init.exclude`` keep their initialisation (the head, for another class list).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import a2model
from pipeline.core.errors import StageError
from pipeline.runtime.checkpoint import FORMAT, Checkpoint
from pipeline.training.settings import InitSettings

WEIGHTS_DIR = Path("weights")  # a dep of the train stage in dvc.yaml: init weights go here (dvc add)


@dataclass(frozen=True)
class InitRecord:
    """Where a training's first weights came from, for its run's tags and its versions' lineage."""

    source: str
    kind: str  # torchvision-2d | checkpoint | registered
    md5: str  # of the file read (the pt2 program for a registered version)
    inflate: str  # centre | mean | "" (3-D weights, as they are)
    loaded: tuple[str, ...]  # the net's keys that took the weights (the pretrained part)

    def tags(self) -> dict[str, str]:
        return {"init.weights": self.source, "init.kind": self.kind, "init.md5": self.md5, "init.inflate": self.inflate}


def load_initial_weights(net: nn.Module, init: InitSettings, verbose: bool = True) -> InitRecord | None:
    """Load ``init.weights`` into ``net`` in place; None when there are none. The report is printed
    (when ``verbose``); a StageError (one line) when the backbone did not load: another architecture."""
    if init.weights is None:
        return None
    state_dict, kind, md5 = read_weights(init.weights)
    if kind == "torchvision-2d":
        if init.inflate is None:
            raise StageError(
                f"model.init.weights={init.weights} holds 2-D weights; set model.init.inflate=centre or mean"
            )
        report = a2model.inflate_from_2d(net, state_dict, init.inflate, init.exclude)
    else:
        report = a2model.load_matching(net, state_dict, init.exclude)
    if verbose:
        print(f"model.init: {init.weights} ({kind}, md5 {md5[:12]}): {report.summary()}", flush=True)
    if not report.backbone_loaded:
        raise StageError(
            f"model.init.weights={init.weights} does not fit this model's backbone ({len(report.mismatched)} "
            "tensors of another shape, see above); give weights of this architecture"
        )
    inflate = init.inflate if kind == "torchvision-2d" else ""
    return InitRecord(init.weights, kind, md5, inflate or "", tuple(report.loaded))


def read_weights(source: str) -> tuple[dict[str, torch.Tensor], str, str]:
    """``(state dict, kind, md5)`` of a weights file or a registered version; one line when it is none."""
    if source.startswith("models:/"):
        return registered_weights(source)
    path = Path(source)
    if not path.is_file():
        raise StageError(f"model.init.weights={source} not found; give a .pth, a last.pt or a models:/ URI")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for a pickle naming code, RuntimeError/EOFError for other bytes
        raise StageError(
            f"model.init.weights={source} is not a weights file that loads without code ({type(err).__name__})"
        ) from None
    if isinstance(record, Mapping) and record.get("format") == FORMAT:
        return dict(Checkpoint.from_record(record, path).weights), "checkpoint", md5
    if not isinstance(record, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in record.items()
    ):
        raise StageError(f"model.init.weights={source} is neither a state dict nor a checkpoint of the train stage")
    kind = "torchvision-2d" if getattr(record.get("conv1.weight"), "ndim", 0) == 4 else "checkpoint"
    return dict(record), kind, md5


def registered_weights(uri: str) -> tuple[dict[str, torch.Tensor], str, str]:
    """The weights of a registered version's pt2 program (downloaded from the tracking store)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="a2nets-init-") as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
        except MlflowException as err:
            reason = str(err).strip().splitlines()[0]
            raise StageError(
                f"model.init.weights={uri}: {reason}; check the name and version (a2net promote --list)"
            ) from None
        programs = sorted(local.rglob("*.pt2"))
        if not programs:
            raise StageError(f"model.init.weights={uri} holds no pt2 program; register one with pipeline.register")
        md5 = hashlib.md5(programs[0].read_bytes()).hexdigest()
        program = torch.export.load(programs[0])
        return {k: v.detach().clone() for k, v in program.state_dict.items()}, "registered", md5
