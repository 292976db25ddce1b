"""MLflow plumbing shared by the stages: where the store is and which experiment to use."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE_DIR = Path("mlflow")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's SQLite store ``mlflow/mlflow.db`` (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_STORE_DIR.mkdir(exist_ok=True)
    # Absolute: MLflow caches stores by URI, so a relative one would follow no later chdir.
    return f"sqlite:///{(DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


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
