"""Evaluate stage: multi-view testing of the trained model, ``python -m pipeline.evaluate [key=value ...]``.

Every video of ``data.val_split`` is seen as ``eval.num_clips`` clips × ``eval.num_crops`` crops
(``pipeline.evaluation.multiview``). Writes ``eval.metrics_file`` (clip/video top-1/top-5 as
fractions), ``eval.per_class_file`` (video top-1 per class), and under ``eval.plots_dir`` the
confusion matrix (``confusion.png``), ``predictions.csv`` (actual, predicted class name per
video) and ``per_class.csv`` (both for ``dvc plots``), and in ``attention/`` the A² blocks'
gather maps on one validation video per class (``eval.attention_classes`` classes at most;
none for a model without A² blocks); logs them to the training's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.evaluation.examples import attention_examples
from pipeline.evaluation.multiview import evaluate_config
from pipeline.evaluation.reports import log_to_run, write_reports
from pipeline.training.checkpoint import CHECKPOINT_FILE


def run(cfg: DictConfig) -> int:
    """Stage entry: evaluate ``train.out_dir/last.pt``, write reports, log them."""
    result = evaluate_config(cfg)
    metrics = result.metrics()
    plots_dir = Path(cfg.eval.plots_dir)
    files = write_reports(result, Path(cfg.eval.metrics_file), Path(cfg.eval.per_class_file), plots_dir)
    figures = attention_examples(
        Path(cfg.train.out_dir) / CHECKPOINT_FILE,
        Path(cfg.data.shards_dir),
        cfg.data.val_split,
        cfg.eval.num_clips,
        cfg.eval.num_crops,
        plots_dir / "attention",
        cfg.eval.attention_classes,
    )
    log_to_run(Path(cfg.train.out_dir), cfg.mlflow.experiment, metrics, files, result.unfinished, figures)
    print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
