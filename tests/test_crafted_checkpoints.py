"""A checkpoint is data: whatever its config names, evaluate and register build no callable from it."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch

import a2model

REPO = Path(__file__).resolve().parents[1]


def _write_checkpoint(workdir: Path, net_config: dict) -> Path:
    net = a2model.build_model("tiny_a2", num_classes=4)
    path = workdir / "models/train/last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "config": {"model": {"net": net_config}, "data": {}},
                "classes": ["a", "b", "c", "d"], "clip": {"num_frames": 8, "stride": 4, "crop_size": 56},
                "model_name": "tiny_a2", "epoch": 1}, path)
    (path.parent / "run_id.txt").write_text("0" * 32 + "\n")
    return path


def _marker_command(marker: Path) -> dict:
    return {"_target_": "os.system", "command": f"touch {marker}"}


@pytest.mark.parametrize("stage", ["pipeline.evaluate", "pipeline.register"])
@pytest.mark.parametrize("net_config, says", [
    (lambda m: _marker_command(m), "model.net._target_ is 'os.system'"),
    (lambda m: {"_target_": "a2model.build_model", "name": "tiny_a2", "block": _marker_command(m)},
     "model.net.block is not a plain value (dict)"),
    (lambda m: {"_target_": "a2model.build_model", "name": "tiny_a2", "_args_": ["x"]},
     "model.net._args_ is not a plain value"),
    (lambda m: {"name": "not_a_model"}, "unknown video model 'not_a_model'"),
])
def test_a_crafted_checkpoint_config_runs_nothing_and_is_one_line(tmp_path, monkeypatch, capsys, stage,
                                                                   net_config, says) -> None:
    marker = tmp_path / "code-ran"
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _write_checkpoint(tmp_path, net_config(marker))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert importlib.import_module(stage).main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from pipeline.evaluate import main

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "models/train").mkdir(parents=True)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "models/train/last.pt")
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "models/train/last.pt is not a checkpoint of the train stage" in err, err
