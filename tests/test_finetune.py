"""End to end on CPU: ImageNet-style 2-D weights inflated into the start of a training, that model
evaluated and registered with the weights' hash in its lineage, then fine-tuned to a UCF-101-layout
set with another class count (head excluded) through the importer, preprocess, validate, train and
evaluate. r50_plain at 4×32² clips keeps it to seconds; the weights are random (nothing downloaded)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest
import torch
import torchvision

from pipeline import evaluate as evaluate_stage
from pipeline import preprocess as preprocess_stage
from pipeline import register as register_stage
from pipeline import train as train_stage
from pipeline import validate as validate_stage
from pipeline.cli import main as a2net
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.training.init import read_weights

from helpers import tiny_overrides, ucf_tree

pytestmark = pytest.mark.slow
QUICK_EVAL = ["eval.num_clips=1", "eval.num_crops=1", "eval.attention_classes=0"]
UCF_FOUR = ["ApplyEyeMakeup", "Archery", "Basketball", "Biking"]  # 4 classes: the Kinetics stand-in has 3


def test_inflated_weights_start_a_training_that_is_registered_and_fine_tuned_to_ucf(training_data, workdir, capsys):
    torch.manual_seed(0)
    weights = workdir / "weights/resnet50.pth"
    weights.parent.mkdir()
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()

    kinetics = tiny_overrides(
        training_data,
        workdir / "kinetics",
        "model=r50_plain",
        "train.epochs=1",
        f"model.init.weights={weights}",
        "model.init.inflate=centre",
        *QUICK_EVAL,
    )
    assert train_stage.main(kinetics) == 0
    assert evaluate_stage.main(kinetics) == 0
    assert register_stage.main(kinetics) == 0
    registered = json.loads(Path("reports/registered_model.json").read_text())
    version = mlflow.MlflowClient().get_model_version(registered["name"], registered["version"])
    assert version.tags["init_weights"] == f"{md5} {weights}"
    started = Checkpoint.load(workdir / "kinetics/model/last.pt")
    assert started.model_name == "r50_plain" and len(started.classes) == 3
    from_registry, kind, _ = read_weights(f"models:/{registered['name']}/{registered['version']}")
    assert kind == "registered" and from_registry.keys() == started.weights.keys()  # a registered version starts
    assert all(torch.equal(from_registry[k], started.weights[k]) for k in started.weights)  # trainings too

    root, shards = workdir / "ucf", workdir / "ucf_shards"
    assert a2net(["import", "ucf101", str(ucf_tree(workdir / "UCF101", UCF_FOUR)), str(root), "--split", "1"]) == 0
    assert "ucf101 split 1: 4 classes, 4 train, 4 validate clips (1 missing)" in capsys.readouterr().out
    fine_tune = tiny_overrides(
        (root, shards),
        workdir / "finetune",
        "data.short_side=32",
        "data.fps=10",
        "data.trim=false",
        "data.workers=1",
        "model=r50_plain",
        "train.epochs=1",
        "train.lr_backbone_scale=0.1",
        f"model.init.weights={workdir / 'kinetics/model/last.pt'}",
        "model.init.exclude=[fc.*]",
        f"validate.report_dir={workdir / 'finetune/validation'}",
        "validate.min_clips_per_class=1",
        "validate.max_missing_fraction=0.2",
        *QUICK_EVAL,
    )
    assert preprocess_stage.main(fine_tune) == 0
    assert validate_stage.main(fine_tune) == 0
    assert train_stage.main(fine_tune) == 0
    assert evaluate_stage.main(fine_tune) == 0
    tuned = Checkpoint.load(workdir / "finetune/model/last.pt")
    assert tuned.classes == UCF_FOUR and tuned.weights["fc.weight"].shape == (4, 2048)
    metrics = json.loads((workdir / "finetune/metrics.json").read_text())
    class_metrics = json.loads((workdir / "finetune/class_metrics.json").read_text())
    assert metrics["num_videos"] == 3 and 0 <= class_metrics["mean_class_accuracy"] <= 1  # 4 test videos, 1 missing
    assert mlflow.get_run(tuned.mlflow_run_id).data.metrics["macro_precision"] == class_metrics["macro_precision"]
    run = mlflow.get_run(tuned.mlflow_run_id)
    assert run.data.tags["init.kind"] == "checkpoint" and run.info.run_id != started.mlflow_run_id
