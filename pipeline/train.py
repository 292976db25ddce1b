"""Train stage: ``python -m pipeline.train [key=value ...]`` (or under ``torchrun`` for DDP).

Trains ``model`` on ``data.shards_dir`` with ``train`` (see ``pipeline.training.fit``). Writes to
``train.out_dir``: ``last.pt`` after every epoch (a ``pipeline.runtime.checkpoint.Checkpoint``;
resumable with ``train.resume=true``) and ``run_id.txt`` (the MLflow run, which evaluate and
register log to as well); per-epoch metrics go to ``train.metrics_csv`` (a DVC plot) and MLflow.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.settings import train_settings
from pipeline.training.fit import train


def run(cfg: DictConfig) -> int:
    """Stage entry: the config's typed settings, trained; say where the checkpoint is."""
    settings = train_settings(cfg)
    checkpoint = train(settings)
    print(f"trained {settings.model.name}: {checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
