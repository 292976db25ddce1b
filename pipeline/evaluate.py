"""Evaluate stage: multi-view testing of the trained model, ``python -m pipeline.evaluate [key=value ...]``.

Every video of ``data.val_split`` is seen as ``eval.num_clips`` clips × ``eval.num_crops`` crops
(``pipeline.evaluation.multiview``). Writes ``eval.metrics_file`` (clip/video top-1/top-5 as
fractions), ``eval.per_class_file`` (video top-1 per class), and under ``eval.plots_dir`` the
confusion matrix (``confusion.png``), ``predictions.csv`` (actual, predicted class name per
video) and ``per_class.csv`` (both for ``dvc plots``), and in ``attention/`` the A² blocks'
gather maps on one validation video per class (``eval.attention_classes`` classes at most;
none for a model without A² blocks); logs them to the training's MLflow run. ``evaluation.json``
beside the metrics records which run was scored, on what data and views (its fingerprint) and
the metrics: what the register stage puts on the model version for the promotion gate.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.core.files import write_atomic
from pipeline.evaluation.examples import attention_examples
from pipeline.evaluation.multiview import evaluate_config
from pipeline.evaluation.reports import log_to_run, write_reports
from pipeline.evaluation.setting import EvalRecord, EvalSetting, record_path, split_digest
from pipeline.training.checkpoint import CHECKPOINT_FILE, RUN_ID_FILE


def run(cfg: DictConfig) -> int:
    """Stage entry: evaluate ``train.out_dir/last.pt``, write reports and the record, log them."""
    result = evaluate_config(cfg)
    metrics = result.metrics()
    plots_dir = Path(cfg.eval.plots_dir)
    files = write_reports(result, Path(cfg.eval.metrics_file), Path(cfg.eval.per_class_file), plots_dir)
    record = evaluation_record(cfg, metrics, result.crop_size)
    write_atomic(record_path(Path(cfg.eval.metrics_file)), record.to_json())
    files.append(record_path(Path(cfg.eval.metrics_file)))
    figures = attention_examples(
        Path(cfg.train.out_dir) / CHECKPOINT_FILE,
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        cfg.eval.num_clips,
        cfg.eval.num_crops,
        plots_dir / "attention",
        cfg.eval.attention_classes,
    )
    log_to_run(
        Path(cfg.train.out_dir), cfg.mlflow.experiment, metrics, files, result.unfinished, figures, record.setting
    )
    print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()), f"(evaluation {record.setting.fingerprint})")
    return 0


def evaluation_record(cfg: DictConfig, metrics: dict[str, float], crop_size: int) -> EvalRecord:
    """What this evaluation scored (the training run), on which bytes and views, and its metrics."""
    run_id_file = Path(cfg.train.out_dir) / RUN_ID_FILE
    setting = EvalSetting(
        split_digest(Path(cfg.data.shards_dir), cfg.data.val_split),
        cfg.data.val_split,
        cfg.eval.num_clips,
        cfg.eval.num_crops,
        crop_size,
    )
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    return EvalRecord(run_id, setting, str(cfg.data.shards_dir), metrics)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
