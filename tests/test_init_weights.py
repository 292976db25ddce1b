"""``model.init``: a training started from other weights (a 2-D ResNet-50 inflated, a project
checkpoint with another class list), what it records, and the one line for weights that do not do."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
import torch
import torchvision

import pipeline.train as train_stage
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.settings import train_settings
from pipeline.training.distributed import DistInfo
from pipeline.training.fit import initial_state
from pipeline.training.optim import set_lr

from helpers import tiny_config, tiny_overrides, train_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet50_pth(tmp_path_factory) -> Path:
    """A random torchvision ResNet-50 state dict saved as a ``.pth`` (nothing downloaded)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


class RunsCode:
    """Pickles as a call of ``os.system``: what a weights file must never get to run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_two_d_weights_inflated_centre_start_an_r50_training(training_data, workdir, resnet50_pth) -> None:
    cfg = tiny_config(
        training_data,
        workdir,
        "model=r50_plain",
        f"model.init.weights={resnet50_pth}",
        "model.init.inflate=centre",
        "train.lr_backbone_scale=0.1",
    )
    state = initial_state(train_settings(cfg), 3, steps_per_epoch=2, device=CPU, info=DistInfo())
    weights_2d = torch.load(resnet50_pth, weights_only=True)
    stem = state.net.stem[0].weight  # (64, 3, 1, 7, 7): k_t = 1, the 2-D kernel itself
    assert torch.equal(stem[:, :, 0], weights_2d["conv1.weight"])
    res4 = state.net.stages[2][0].conv_a.weight  # k_t = 3: the middle slice, zeros around it
    assert torch.equal(res4[:, :, 1, :, :], weights_2d["layer3.0.conv1.weight"]) and not res4[:, :, 0].any()
    assert state.init.kind == "torchvision-2d" and state.init.inflate == "centre"
    assert "fc.weight" not in state.init.loaded  # 1000 classes into 3: the head stays He-initialised
    scaled = {scale: [g for g in state.optimizer.param_groups if g["lr_scale"] == scale] for scale in (0.1, 1.0)}
    head = [p for g in scaled[1.0] for p in g["params"]]
    assert len(head) == 2 and head[0] is state.net.fc.weight  # the new head at the schedule's lr
    assert sum(len(g["params"]) for g in scaled[0.1]) == len(list(state.net.parameters())) - 2  # the rest at 0.1 ×
    set_lr(state.optimizer, 0.2)
    assert {g["lr"] for g in scaled[0.1]} == {0.2 * 0.1} and {g["lr"] for g in scaled[1.0]} == {0.2}


def test_a_checkpoint_of_another_class_list_starts_a_training_with_its_head_excluded(
    training_data, workdir, trained
) -> None:
    """A fine-tune: the backbone of a finished run, a new 5-way head (``fc.*`` excluded), a new run."""
    source = Checkpoint.load(trained / "last.pt")
    cfg = tiny_config(training_data, workdir, f"model.init.weights={trained / 'last.pt'}", "model.init.exclude=[fc.*]")
    state = initial_state(train_settings(cfg), 5, steps_per_epoch=2, device=CPU, info=DistInfo())
    for key, value in state.net.state_dict().items():
        assert torch.equal(value, source.weights[key]) is (not key.startswith("fc.")), key
    assert state.net.fc.out_features == 5 and state.init.kind == "checkpoint"

    checkpoint = Checkpoint.load(train_config(cfg))  # a run of its own, which records its start
    run = mlflow.get_run(checkpoint.mlflow_run_id)
    assert run.info.run_id != source.mlflow_run_id
    assert run.data.tags["init.weights"] == str(trained / "last.pt") and run.data.tags["init.kind"] == "checkpoint"
    assert len(run.data.tags["init.md5"]) == 32


@pytest.mark.parametrize(
    "make, extra, says",
    [
        (lambda p: None, [], "not found; give a .pth, a last.pt or a models:/ URI"),
        (
            lambda p: torch.save({"w": RunsCode(p.with_name("code-ran"))}, p),
            [],
            "is not a weights file that loads without code (UnpicklingError)",
        ),
        (lambda p: torch.save([torch.zeros(1)], p), [], "is neither a state dict nor a checkpoint of the train stage"),
        (
            lambda p: torch.save(torchvision.models.resnet18().state_dict(), p),
            ["model=r50_plain"],
            "holds 2-D weights; set model.init.inflate=centre or mean",
        ),
        (
            lambda p: torch.save(torchvision.models.resnet18().state_dict(), p),
            ["model=r50_plain", "model.init.inflate=mean"],
            "does not fit this model's backbone",
        ),
    ],
    ids=["missing", "pickle-with-code", "foreign", "2d-without-inflate", "resnet18-into-r50"],
)
def test_weights_that_cannot_start_the_training_are_one_line(training_data, workdir, capsys, make, extra, says):
    path = workdir / "weights.pth"
    make(path)
    argv = tiny_overrides(training_data, workdir, *extra, f"model.init.weights={path}")
    assert train_stage.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.init.weights=") and err.count("\n") == 1 and says in err, err
    assert not (workdir / "code-ran").exists()
