"""MLflow plumbing shared by the stages: where the store is, which experiment, the code's commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.core.errors import StageError

DEFAULT_STORE_DIR = Path("mlflow")


def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory (a run's code), ``unknown`` outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's SQLite store ``mlflow/mlflow.db`` (absolute).

    For the stages, which run in the project root: the folder is created when missing.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_STORE_DIR.mkdir(exist_ok=True)
    # Absolute: MLflow caches stores by URI, so a relative one would follow no later chdir.
    return f"sqlite:///{(DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


def project_store(start: Path) -> Path | None:
    """The store of the project around ``start``: the nearest ``mlflow/`` folder, in ``start`` or
    a parent, that holds an ``mlflow.db`` or sits beside a ``dvc.yaml``; None when there is none."""
    for folder in (start, *start.parents):
        store = folder / DEFAULT_STORE_DIR
        if (store / "mlflow.db").is_file() or (store.is_dir() and (folder / "dvc.yaml").is_file()):
            return store
    return None


def existing_tracking_uri() -> str:
    """For the command line: ``$MLFLOW_TRACKING_URI`` or the project's store; never creates one.

    Run from anywhere inside the project (``docs/`` too); outside it, one line says where it
    looked and how to point at a store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = project_store(Path.cwd().resolve())
    if store is None:
        raise StageError(
            f"no MLflow store: no mlflow/mlflow.db (or mlflow/ beside dvc.yaml) in {Path.cwd()} "
            "or its parents; run a2net inside the project or set MLFLOW_TRACKING_URI"
        )
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def setup_mlflow(experiment: str) -> str:
    """Point MLflow at the store and return the id of ``experiment`` (created when new).

    On the local SQLite store, artifacts go to ``mlflow/artifacts``; a remote server keeps
    its own artifact root.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        return existing.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(experiment, artifact_location=artifact_location)
