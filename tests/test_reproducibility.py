"""The data stages make the same bytes on any machine.

- Cross-machine check: the default dataset and its shards, made from scratch here by the
  stages' own dvc.yaml commands, have exactly the DVC hashes of the committed ``dvc.lock``. CI
  runs on other machines than the one that committed the lock, so every CI run checks it.
- One-machine stand-in for another CPU: with every SIMD path off (ffmpeg ``-cpuflags 0``,
  libx264 ``asm=0``, libjpeg-turbo ``JSIMD_FORCENONE``, numpy's dispatched kernels) the stages
  write the same bytes.
- A ``video.ffmpeg`` that is not an ffmpeg is one line naming the setting.
- The toolchain stage writes its record where ``video.toolchain_file`` says.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy._core._multiarray_umath as numpy_simd
import pytest
import yaml

from pipeline.data.video import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
DATA_STAGES = ("toolchain", "generate", "preprocess")
TINY = [
    "generate.train_per_class=2",
    "generate.validate_per_class=1",
    "generate.num_missing=1",
    "generate.num_corrupt=1",
    "data.samples_per_shard=3",
]


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for an output: a file's md5, or a directory's ``<md5>.dir``.

    A directory's is the md5 of the JSON list of ``{"md5", "relpath"}`` of its files sorted by
    relative path, as ``dvc_data.hashfile.tree.Tree`` computes it.
    """
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    entries = sorted(
        (
            {"md5": hashlib.md5(f.read_bytes()).hexdigest(), "relpath": f.relative_to(path).as_posix()}
            for f in path.rglob("*")
            if f.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def locked_outs() -> dict[str, str]:
    """``{out path: md5}`` of the data stages in the committed dvc.lock."""
    stages = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for name in DATA_STAGES for out in stages[name]["outs"]}


def run_data_stages(workdir: Path, overrides: list[str] = (), env: dict[str, str] | None = None) -> None:
    """Run the data stages' dvc.yaml commands (plus ``overrides``) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in DATA_STAGES:
        command = shlex.split(stages[name]["cmd"])
        assert command[0] == "python", command
        result = subprocess.run(
            [sys.executable, *command[1:], *overrides],
            cwd=workdir,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"


@pytest.mark.slow
def test_default_data_stages_reproduce_the_committed_dvc_lock(tmp_path: Path) -> None:
    run_data_stages(tmp_path)
    expected = locked_outs()
    toolchain = tmp_path / "data/toolchain.json"
    assert dvc_md5(toolchain) == expected["data/toolchain.json"], (
        "this machine's tools differ from the ones dvc.lock was made with (pinned packages not "
        f"installed?): {toolchain.read_text()}"
    )
    actual = {path: dvc_md5(tmp_path / path) for path in expected}
    assert actual == expected, "the data stages wrote other bytes than the committed dvc.lock records"


def test_data_stages_write_the_same_bytes_with_every_simd_path_off(tmp_path: Path) -> None:
    # the same video.ffmpeg in both runs; with SIMD off it adds -cpuflags 0 and runs x264 as C
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"""#!{sys.executable}
import os, re, sys
args = sys.argv[1:]
if os.environ.get("A2NETS_TEST_SIMD_OFF"):
    args = ["-cpuflags", "0", *(re.sub(r"\\basm=[^:]*", "asm=0", arg) for arg in args)]
os.execv({ffmpeg_exe()!r}, [{ffmpeg_exe()!r}, *args])
""")
    wrapper.chmod(0o755)
    overrides = [*TINY, f"video.ffmpeg={wrapper}", "data.short_side=112"]  # up- and downscaling
    simd_off = {
        "A2NETS_TEST_SIMD_OFF": "1",
        "JSIMD_FORCENONE": "1",
        "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_simd.__cpu_dispatch__),
    }
    run_data_stages(tmp_path / "native", overrides)
    run_data_stages(tmp_path / "plain", overrides, simd_off)
    for out in ("data/synthetic", "data/shards"):
        native, plain = tmp_path / "native" / out, tmp_path / "plain" / out
        assert dvc_md5(plain) == dvc_md5(native), f"{out} depends on the CPU's SIMD paths"
    assert len(list((tmp_path / "native/data/shards/train").glob("*.tar"))) >= 2


def test_dvc_md5_is_the_hash_dvc_records(tmp_path: Path) -> None:
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/b.txt").write_text("b")
    (tmp_path / "d/sub/a.bin").write_bytes(b"\0a")
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for f in sorted((tmp_path / "d").rglob("*")):
        if f.is_file():
            parts = f.relative_to(tmp_path / "d").parts
            tree.add(parts, None, HashInfo("md5", hashlib.md5(f.read_bytes()).hexdigest()))
    tree.digest()
    assert dvc_md5(tmp_path / "d") == tree.hash_info.value


@pytest.mark.parametrize(
    "setting, says",
    [
        ("/nonexistent/ffmpeg", "cannot be run"),
        ("/bin/true", "is not ffmpeg"),
        ("system", "but there is no ffmpeg on PATH"),  # PATH below holds only the venv's bin
    ],
)
def test_a_bad_video_ffmpeg_is_one_line_naming_the_setting(tmp_path: Path, setting: str, says: str) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    for module in ("pipeline.toolchain", "pipeline.generate", "pipeline.preprocess"):
        result = subprocess.run(
            [sys.executable, "-m", module, f"video.ffmpeg={setting}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, (module, result.stderr)
        named = f"video.ffmpeg={setting}" if setting == "system" else f"video.ffmpeg={setting!r}"
        assert result.stderr.startswith(f"error: {named} {says}"), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*"))


def test_the_toolchain_stage_writes_its_record_where_video_toolchain_file_says(tmp_path: Path, monkeypatch) -> None:
    """The versions of the wheel's tools, in that file and nowhere else (the data stages' DVC dep)."""
    from pipeline.data.provenance import toolchain
    from pipeline.toolchain import main

    monkeypatch.chdir(tmp_path)  # no params.yaml: the composed defaults, data/toolchain.json among them
    record = tmp_path / "elsewhere/versions.json"
    assert main([f"video.toolchain_file={record}"]) == 0
    assert json.loads(record.read_text()) == toolchain("wheel")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "elsewhere",
        "elsewhere/versions.json",
    ]
