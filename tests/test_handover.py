"""The hand-over between stages, for non-default settings: what one stage records is what the next
one uses (train → evaluate → register → the served model), evaluation results do not depend on the
batch size or the loader's workers, and each stage reads the split it says it reads."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch

from pipeline import evaluate as evaluate_stage
from pipeline import register as register_stage
from pipeline import train as train_stage
from pipeline.evaluation.multiview import evaluate
from pipeline.evaluation.setting import EvalRecord, split_digest
from pipeline.registry.predict import load_model
from pipeline.runtime.checkpoint import Checkpoint

from helpers import read_manifest, tiny_overrides


@pytest.mark.parametrize(("batch_size", "num_workers"), [(6, 0), (16, 2), (60, 1)])
def test_evaluation_does_not_depend_on_batch_size_or_loader_workers(training_data, trained, batch_size, num_workers):
    """The 8 training videos × 2 clips × 3 crops: one view per forward pass with no workers is the
    reference; other batch sizes and worker counts give the same view scores and metrics."""
    shards = training_data[1]

    def scored(batch: int, workers: int):
        path = trained / "last.pt"
        network = Checkpoint.load(path).trained_net(path, torch.device("cpu"), "eval.allow_unfinished", False)
        return evaluate(network, shards, "train", 2, 3, batch, workers)

    reference, other = scored(1, 0), scored(batch_size, num_workers)
    assert torch.equal(reference.labels, other.labels)
    torch.testing.assert_close(other.view_scores, reference.view_scores, rtol=0, atol=1e-6)
    assert other.metrics() == reference.metrics()


def test_register_serves_and_records_what_evaluate_recorded(training_data, trained, workdir):
    """evaluate on data.val_split=train with 2 clips × 1 crop; register is run with other eval
    values (as by hand): the version carries the evaluated setting, split digest and metrics, is
    served with the evaluated views, and reports/run.json names that version and the run."""
    shards = training_data[1]
    evaluated = ["data.val_split=train", "eval.num_clips=2", "eval.num_crops=1", "eval.attention_classes=0"]
    argv = tiny_overrides(training_data, workdir, f"train.out_dir={trained}", *evaluated)
    assert evaluate_stage.main(argv) == 0
    record = EvalRecord.read(workdir / "evaluation.json")
    metrics = json.loads((workdir / "metrics.json").read_text())
    run_id = (trained / "run_id.txt").read_text().strip()
    assert record.run_id == run_id and record.metrics == metrics
    assert (record.setting.split, record.setting.num_clips, record.setting.num_crops) == ("train", 2, 1)
    assert record.setting.data_digest == split_digest(shards, "train") != split_digest(shards, "validate")
    assert record.setting.crop_size == 32  # the checkpoint's clip, not pipeline/conf's 56

    by_hand = tiny_overrides(training_data, workdir, f"train.out_dir={trained}", "eval.num_clips=5", "eval.num_crops=3")
    assert register_stage.main(by_hand) == 0
    registered = json.loads(Path("reports/registered_model.json").read_text())
    assert json.loads(Path("reports/run.json").read_text()) == {
        "mlflow_run": run_id,
        "model_version": registered["version"],
    }
    version = mlflow.MlflowClient().get_model_version(registered["name"], registered["version"])
    tagged = json.loads(version.tags["evaluation"])
    assert tagged["setting"] == {
        "data_digest": record.setting.data_digest,
        "split": "train",
        "num_clips": 2,
        "num_crops": 1,
        "crop_size": 32,
    }
    assert tagged["metrics"] == metrics and version.tags["eval.fingerprint"] == record.setting.fingerprint
    assert version.tags["video_top1"] == f"{metrics['video_top1']:.4f}"
    served = load_model(registered["model_uri"]).preprocessing
    assert (served.num_clips, served.num_crops, served.num_frames, served.crop_size) == (2, 1, 4, 32)


def test_register_refuses_an_evaluation_of_another_run(training_data, trained, workdir, capsys):
    """An evaluation record left by another training (a stale reports/ after a retrain) is refused
    in one line, before anything is registered."""
    argv = tiny_overrides(training_data, workdir, f"train.out_dir={trained}", "eval.attention_classes=0")
    assert evaluate_stage.main(argv) == 0
    path = workdir / "evaluation.json"
    body = json.loads(path.read_text())
    path.write_text(json.dumps(body | {"run_id": "0" * 32}))
    capsys.readouterr()
    assert register_stage.main(argv) == 2
    run_id = (trained / "run_id.txt").read_text().strip()
    assert capsys.readouterr().err == (
        f"error: {path} scores run {'0' * 32}, not the training run {run_id} of {trained}; rerun the evaluate stage\n"
    )
    assert not Path("reports/registered_model.json").exists()


def test_each_stage_reads_the_split_it_names(training_data, workdir):
    """data.train_split=validate, data.val_split=train (swapped): training sees the validation
    videos' count of steps, evaluation scores the training videos."""
    swapped = ["data.train_split=validate", "data.val_split=train", "train.batch_size=2", "train.epochs=1"]
    argv = tiny_overrides(training_data, workdir, *swapped, "eval.attention_classes=0", "train.val_every=0")
    assert train_stage.main(argv) == 0
    assert evaluate_stage.main(argv) == 0
    rows = [r for r in read_manifest(training_data[1]).values() if r["status"] == "ok"]
    count = {split: sum(r["split"] == split for r in rows) for split in ("train", "validate")}
    history = torch.load(workdir / "model/last.pt", weights_only=True)["history"]
    assert history[0]["clips_per_s"] > 0
    trained_clips = round(history[0]["clips_per_s"] * history[0]["epoch_time"])
    assert trained_clips == count["validate"] // 2 * 2  # batch 2, drop_last
    assert json.loads((workdir / "metrics.json").read_text())["num_videos"] == count["train"]
