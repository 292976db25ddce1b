"""benchmarks/gpu_check.py, the check a GPU loan runs: a clean no-op without a GPU, and every part
of it (peak, training steps, attention blocks, the data paths, a tiny training) run at toy sizes on
the CPU, so that the few minutes on a GPU are not lost to a bug the CPU could have shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would measure it")
def test_without_a_gpu_it_says_so_in_one_line_and_measures_nothing(tmp_path: Path) -> None:
    done = run("--out", str(tmp_path / "out"))
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and "no CUDA GPU" in done.stdout
    assert not (tmp_path / "out").exists()


def test_every_part_runs_at_toy_sizes_and_writes_its_tables(tmp_path: Path, training_data) -> None:
    root, shards = training_data
    done = run("--smoke", "--out", str(tmp_path), "--dataset", str(root), "--shards", str(shards))
    assert done.returncode == 0, done.stderr
    tables = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [row["dtype"] for row in tables["matmul peak"]] == ["bfloat16", "float32"]
    steps = tables["training steps (bf16, channels-last)"]
    assert {row["model"] for row in steps} == {"tiny_a2", "tiny_plain"}
    assert all(row["clips_per_s"] > 0 and row["mfu_pct"] > 0 for row in steps)
    blocks = tables["attention blocks (fp32, forward + backward)"]
    assert [row["block"] for row in blocks] == ["A²", "non-local", "A² wrong order"]
    assert all(row["ms"] > 0 and row["gemm_bound_pct"] > 0 for row in blocks)
    paths = tables["data path (training clips)"]
    assert [row["path"].split()[0] for row in paths] == ["decode_on=workers", "decode_on=device"]
    assert all(row["clips_per_s"] > 0 for row in paths)
    (bound,) = tables["what bounds training"]
    assert bound["data_over_model"] == pytest.approx(bound["data_clips_per_s"] / bound["model_clips_per_s"])
    (training,) = tables["tiny training"]
    assert training["status"] == "ran" and training["epochs"] == 1 and 0 <= training["video_top1"] <= 1
    assert "### what bounds training" in done.stdout


def test_the_tiny_training_says_what_it_skipped(tmp_path: Path) -> None:
    done = run("--smoke", "--out", str(tmp_path), "--shards", str(tmp_path / "none"))
    assert done.returncode == 0, done.stderr
    (training,) = json.loads((tmp_path / "gpu_check.json").read_text())["tiny training"]
    why = f"no shards at {tmp_path / 'none'} (make repro, or carry data/shards)"
    assert training == {"part": "tiny training + evaluation", "status": f"skipped: {why}"}
