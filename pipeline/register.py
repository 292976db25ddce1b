"""Register stage: publish ``<train.out_dir>/last.pt`` as a new version of ``register.model_name``.

``python -m pipeline.register``: logs the model (pt2) to its training run, registers it with its
lineage as tags (``pipeline.registry.publish``) and points ``reports/registered_model.json`` at it.
``reports/run.json`` (a DVC metric) repeats the run id and version, so that ``dvc exp show`` lists
each experiment's MLflow run and registered version beside its metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.core.files import write_atomic
from pipeline.evaluation.setting import record_path
from pipeline.registry.publish import register_training
from pipeline.tracking.store import full_disk_is_one_line

REGISTERED_MODEL_FILE = Path("reports/registered_model.json")
RUN_FILE = Path("reports/run.json")


def run(cfg: DictConfig) -> None:
    """Register the training's checkpoint and record where the new version is; a full disk (the
    store's, its artifacts' or the temp folder's) is one line, with the training run left as it was."""
    with full_disk_is_one_line(None, "python -m pipeline.register"):
        registered, lineage = register_training(
            Path(cfg.train.out_dir),
            cfg.register.model_name,
            cfg.mlflow.experiment,
            Path(cfg.data.shards_dir),
            Path(cfg.validate.report_dir) / "summary.json",
            record_path(Path(cfg.eval.metrics_file)),
            bool(cfg.register.get("allow_unfinished", False)),
            dict(cfg.register.get("serving") or {}),
        )
        write_atomic(REGISTERED_MODEL_FILE, json.dumps(asdict(registered), indent=2) + "\n")
        run_record = {"mlflow_run": registered.run_id, "model_version": registered.version}
        write_atomic(RUN_FILE, json.dumps(run_record, indent=2) + "\n")
    print(f"registered {registered.model_uri} (run {registered.run_id}, validation {lineage.validation})")


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
