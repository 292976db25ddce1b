"""The GPU config's code paths (gpu_paper: bf16 autocast, channels_last_3d, torch.compile) run on CPU,
so they cannot rot on a machine without a GPU."""

from __future__ import annotations

import math

import pytest
import torch

import pipeline.train as train_stage
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.runtime.device import autocast
from pipeline.training.fit import cpp_compiler

from helpers import config_model_input, record_built_nets, tiny_config, tiny_overrides


@pytest.mark.parametrize("amp, enabled", [("bf16", True), ("fp32", False)])
def test_bf16_autocast_runs_on_the_training_device_cpu_included(amp: str, enabled: bool) -> None:
    with autocast(torch.device("cpu"), amp):
        assert torch.is_autocast_enabled("cpu") is enabled
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (torch.bfloat16 if enabled else torch.float32)


@pytest.mark.parametrize("channels_last", [True, False])
def test_clips_take_the_channels_last_layout_on_any_device(training_data, tmp_path, channels_last) -> None:
    cfg = tiny_config(training_data, tmp_path, f"train.channels_last={str(channels_last).lower()}")
    clips = config_model_input(cfg)(torch.zeros(2, 1, 3, 4, 8, 8, dtype=torch.uint8), torch.device("cpu"))
    assert clips.shape == (2, 3, 4, 8, 8)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert clips.is_contiguous(memory_format=layout) and clips.is_contiguous() is not channels_last


@pytest.mark.parametrize(
    "settings",
    [
        ("train.amp=bf16", "train.channels_last=true"),
        ("train.amp=bf16", "train.channels_last=true", "train.compile=true"),  # gpu_paper's three
    ],
    ids=["bf16+channels_last", "bf16+channels_last+compile"],
)
def test_a_tiny_training_runs_with_the_gpu_settings_on_cpu(
    training_data, workdir, monkeypatch, settings, capsys
) -> None:
    """Each setting takes effect: the logits of the training steps come out of bf16 autocast
    (train.amp), the clips are channels_last (tested above), and torch.compile compiled a graph."""
    if "train.compile=true" in settings and not cpp_compiler():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    torch._dynamo.reset()
    step_dtypes: set[torch.dtype] = set()  # not the eval-mode copy that counts the MACs

    def record_dtype(net: torch.nn.Module, inputs: tuple, logits: torch.Tensor) -> None:
        if net.training:
            step_dtypes.add(logits.dtype)

    record_built_nets(monkeypatch, lambda net: net.register_forward_hook(record_dtype))
    argv = tiny_overrides(training_data, workdir, "train.epochs=1", "train.val_every=0", *settings)
    assert train_stage.main(argv) == 0
    assert step_dtypes == {torch.bfloat16}
    out = capsys.readouterr().out
    loss = float(out.split("train_loss=")[1].split()[0])
    assert math.isfinite(loss) and "warning" not in out
    checkpoint = Checkpoint.load(workdir / "model" / "last.pt")
    assert all(torch.isfinite(w).all() for w in checkpoint.weights.values() if w.is_floating_point())
    assert checkpoint.model.amp == "bf16"
    if "train.compile=true" in settings:
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
