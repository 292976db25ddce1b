"""A checkpoint is data: whatever its config names, evaluate and register build no callable from it."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch

import a2model
from pipeline.runtime.checkpoint import FORMAT_VERSION, Checkpoint, ClipGeometry, FrameFormat, ModelSpec, Schedule

REPO = Path(__file__).resolve().parents[1]


def _write_checkpoint(workdir: Path, net_config: dict) -> Path:
    """A finished, well-formed checkpoint whose only fault is the model config it carries."""
    net = a2model.build_model("tiny_a2", num_classes=4)
    path = workdir / "models/train/last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ModelSpec(
        net={"name": "tiny_a2", **net_config},
        clip=ClipGeometry(num_frames=8, stride=4, crop_size=56),
        frames=FrameFormat(fps=8.0, short_side=64, jpeg_quality=90, mean=(0.45,) * 3, std=(0.225,) * 3),
        amp="fp32",
    )
    schedule = Schedule(lr=0.1, warmup_epochs=0.0, epochs=1, batch_size=8)
    Checkpoint(net.state_dict(), model, schedule, "0" * 32, classes=["a", "b", "c", "d"], epoch=1).save(path)
    (path.parent / "run_id.txt").write_text("0" * 32 + "\n")
    return path


def _retyped(path: Path, record: str, key: str, value: object) -> None:
    """A checkpoint of this format whose ``model.<record>.<key>`` has another type."""
    _write_checkpoint(path.parents[2], {})
    saved = torch.load(path, weights_only=True)
    saved["model"][record][key] = value
    torch.save(saved, path)


def _marker_command(marker: Path) -> dict:
    return {"_target_": "os.system", "command": f"touch {marker}"}


@pytest.mark.parametrize("stage", ["pipeline.evaluate", "pipeline.register"])
@pytest.mark.parametrize(
    "net_config, says",
    [
        (lambda m: _marker_command(m), "model.net._target_ is 'os.system'"),
        (
            lambda m: {"_target_": "a2model.build_model", "name": "tiny_a2", "block": _marker_command(m)},
            "model.net.block is not a plain value (dict)",
        ),
        (
            lambda m: {"_target_": "a2model.build_model", "name": "tiny_a2", "_args_": ["x"]},
            "model.net._args_ is not a plain value",
        ),
        (lambda m: {"name": "not_a_model"}, "unknown video model 'not_a_model'"),
        (lambda m: {"name": {"_target_": "os.system", "command": f"touch {m}"}}, "unknown video model"),
    ],
)
def test_a_crafted_checkpoint_config_runs_nothing_and_is_one_line(
    tmp_path, monkeypatch, capsys, stage, net_config, says
) -> None:
    marker = tmp_path / "code-ran"
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _write_checkpoint(tmp_path, net_config(marker))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert importlib.import_module(stage).main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not marker.exists()


@pytest.mark.parametrize(
    "write, says",
    [
        (lambda p: torch.save({"weights": torch.zeros(1)}, p), "is not a checkpoint of the train stage"),
        (lambda p: torch.save({"format": "a2nets.checkpoint", "format_version": 0}, p), "is checkpoint format 0"),
        (  # the whole-config checkpoints of before the typed records
            lambda p: torch.save({"format": "a2nets.checkpoint", "format_version": 1, "config": {}}, p),
            "is checkpoint format 1, this code reads 2",
        ),
        (lambda p: _retyped(p, "clip", "num_frames", "8"), "malformed checkpoint (ClipGeometry.num_frames is str)"),
        (lambda p: _retyped(p, "frames", "mean", ["a"] * 3), "malformed checkpoint (FrameFormat.mean is list)"),
        (lambda p: _retyped(p, "frames", "fps", True), "malformed checkpoint (FrameFormat.fps is bool)"),
        (
            lambda p: torch.save({"format": "a2nets.checkpoint", "format_version": FORMAT_VERSION, "epoch": "1"}, p),
            "malformed checkpoint",
        ),
        (lambda p: p.write_bytes(b"not a zip archive"), "cannot be read as a checkpoint"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_of_this_format_is_one_line(tmp_path, monkeypatch, capsys, write, says) -> None:
    from pipeline.evaluate import main

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "models/train").mkdir(parents=True)
    write(tmp_path / "models/train/last.pt")
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"models/train/last.pt {says}" in err.replace(":", ""), err


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["model.net._target_=os.system", "+model.net.command='touch {m}'"], "model.net._target_ is 'os.system'"),
        (["+model.net.block={{_target_: os.system, command: 'touch {m}'}}"], "model.net.block is not a plain value"),
        (["+model.net._args_=['touch {m}']"], "model.net._args_ is not a plain value"),
    ],
)
def test_an_override_naming_code_runs_nothing_and_is_one_line(training_data, workdir, capsys, overrides, says) -> None:
    """The command line (and `dvc exp run -S`) is no way in either: the train stage builds its net by
    name from the project's factory; another _target_, nested or not, is one line and runs nothing."""
    import pipeline.train as train_stage

    from helpers import tiny_overrides

    marker = workdir / "code-ran"
    argv = tiny_overrides(training_data, workdir, *(o.format(m=marker) for o in overrides))
    assert train_stage.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the config's model.net: ") and err.count("\n") == 1 and says in err, err
    assert not marker.exists() and not (workdir / "model/last.pt").exists()
