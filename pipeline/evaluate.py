"""Evaluate stage: multi-view testing of the trained model, ``python -m pipeline.evaluate [key=value ...]``.

Every video of ``data.val_split`` is seen as ``eval.num_clips`` clips × ``eval.num_crops`` crops
(``pipeline.evaluation.multiview``). Writes ``eval.metrics_file`` (clip/video top-1/top-5 as
fractions; beside it ``class_metrics.json``: mean class accuracy, macro precision and recall, and
``kind_metrics.json``: video top-1 per annotation kind, e.g. the synthetic set's spatial/temporal),
``eval.per_class_file`` (video top-1 per class), and under ``eval.plots_dir`` the
confusion matrix (``confusion.png``), ``predictions.csv`` (actual, predicted class name per
video) and ``per_class.csv`` (both for ``dvc plots``), and in ``attention/`` the A² blocks'
gather maps on one validation video per class (``eval.attention_classes`` classes at most;
none for a model without A² blocks); logs them to the training's MLflow run. ``evaluation.json``
beside the metrics records which run was scored, on what data and views (its fingerprint) and
the metrics: what the register stage puts on the model version for the promotion gate.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.core.files import write_atomic
from pipeline.evaluation.examples import attention_examples
from pipeline.evaluation.multiview import evaluate_plan, load_trained
from pipeline.evaluation.plan import EvalPlan
from pipeline.evaluation.reports import log_to_run, write_reports
from pipeline.evaluation.setting import EvalRecord, EvalSetting, record_path, split_digest
from pipeline.runtime.checkpoint import RUN_ID_FILE
from pipeline.settings import eval_plan


def run(cfg: DictConfig) -> int:
    """Stage entry: evaluate ``train.out_dir/last.pt`` (its net built once), write reports and the
    record, draw the attention examples, log them."""
    plan = eval_plan(cfg)
    trained = load_trained(plan)
    result = evaluate_plan(plan, trained)
    metrics = result.metrics()
    breakdown = result.class_metrics() | result.kind_metrics()
    files = write_reports(result, plan.metrics_file, plan.per_class_file, plan.plots_dir)
    record = evaluation_record(plan, metrics, result.crop_size)
    write_atomic(record_path(plan.metrics_file), record.to_json())
    files.append(record_path(plan.metrics_file))
    figures = attention_examples(
        trained,
        plan.shards_dir,
        plan.split,
        plan.num_clips,
        plan.num_crops,
        plan.plots_dir / "attention",
        plan.attention_classes,
        plan.crop_size,
    )
    out_dir = plan.checkpoint.parent
    log_to_run(out_dir, plan.experiment, metrics | breakdown, files, result.unfinished, figures, record.setting)
    shown = metrics | breakdown
    print(" ".join(f"{k}={v:.4g}" for k, v in shown.items()), f"(evaluation {record.setting.fingerprint})")
    return 0


def evaluation_record(plan: EvalPlan, metrics: dict[str, float], crop_size: int) -> EvalRecord:
    """What this evaluation scored (the training run), on which bytes and views, and its metrics."""
    run_id_file = plan.checkpoint.parent / RUN_ID_FILE
    setting = EvalSetting(
        split_digest(plan.shards_dir, plan.split), plan.split, plan.num_clips, plan.num_crops, crop_size
    )
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    return EvalRecord(run_id, setting, str(plan.shards_dir), metrics)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
