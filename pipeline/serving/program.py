"""A model's pt2 program (``torch.export``): written by the register stage, loaded pickle-free.

``torch.export.load`` unpickles an archive's weights with ``weights_only=False``, so an archive
is loaded only after MLflow's own check that every record is JSON, text or tensors (run with
pickle disallowed, whatever the environment says).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from pipeline.core.errors import StageError

PT2_FILE = "model.pt2"
EXAMPLE_BATCH = 2  # > 1, or torch.export specialises the batch dimension to a constant


def export_program(net: torch.nn.Module, view_shape: tuple[int, ...], path: Path) -> Path:
    """Export ``net`` (eval mode) with a dynamic batch of views ``(N, *view_shape)`` to ``path``."""
    example = torch.zeros((EXAMPLE_BATCH, *view_shape))
    program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, path)
    return path


@contextlib.contextmanager
def _pickle_disallowed() -> Iterator[None]:
    """Make MLflow's pt2 check refuse any record that is not pickle-free (its default allows)."""
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def load_program(archive: Path, shown: str) -> torch.export.ExportedProgram:
    """The pt2 program at ``archive``, checked pickle-free; errors name the model ``shown``."""
    from mlflow.exceptions import MlflowException
    from mlflow.pytorch import _validate_pt2_archive_is_pickle_free  # MLflow's own record check

    if not archive.is_file():
        raise StageError(
            f"cannot load model {shown}: no pt2 program ({archive.name}); register it with the register stage"
        )
    try:
        with _pickle_disallowed():
            _validate_pt2_archive_is_pickle_free(str(archive))
        return torch.export.load(str(archive))
    except MlflowException as err:
        raise StageError(f"cannot load model {shown}: {str(err.message).splitlines()[0]}") from None
    except Exception as err:  # torch.export.load raises many types on a damaged archive
        raise StageError(f"cannot load model {shown}: damaged pt2 archive ({type(err).__name__})") from None
