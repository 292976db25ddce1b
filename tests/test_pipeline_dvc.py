"""The whole pipeline through real DVC in a temp git repo: runs, reruns only the toolchain check the
second time, the training rerun from scratch gives the same metrics, ``dvc metrics show`` stays
narrow and the plots are declared, ``dvc exp run -S eval.num_crops=3`` recomposes params.yaml and
reruns only the stages it changes, and another ffmpeg build in
``video.ffmpeg`` reruns the data stages with its version recorded. And a DVC remote round trip: push,
a fresh git clone pulls byte-identical outputs, and ``dvc repro`` there has nothing to do."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from helpers import TINY, copy_project, pull_and_check, push_and_clone, run_cmd


def _other_ffmpeg_build(path: Path) -> Path:
    """An executable that is the wheel's ffmpeg but reports another version (another build)."""
    from pipeline.data.video import ffmpeg_exe

    path.write_text(f"""#!{sys.executable}
import os, sys
if sys.argv[1:] == ["-version"]:
    print("ffmpeg version 0.0-other-build Copyright (c) the test")
    raise SystemExit(0)
os.execv({ffmpeg_exe()!r}, [{ffmpeg_exe()!r}, *sys.argv[1:]])
""")
    path.chmod(0o755)
    return path


def _stage_out_hashes(lock_file: Path) -> dict[str, list[str]]:
    lock = yaml.safe_load(lock_file.read_text())
    stages = ("generate", "preprocess", "validate")  # validate: summary.json and summary.html
    return {stage: [out["md5"] for out in lock["stages"][stage]["outs"]] for stage in stages}


def _assert_readable_metrics_and_plots(project: Path) -> None:
    """``dvc metrics show`` has the test metrics (in 120 columns) and the run and version, not the
    per-class table; the per-class bar and val_clip_top1 line are plots."""
    table = run_cmd(["dvc", "metrics", "show"], project).stdout
    assert "video_top1" in table and "mlflow_run" in table and "per_class" not in table, table
    test_metrics = run_cmd(["dvc", "metrics", "show", "reports/metrics.json"], project).stdout
    assert max(len(line) for line in test_metrics.splitlines()) <= 120, test_metrics
    plots = json.loads(run_cmd(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    assert {"reports/plots/per_class.csv", "val_clip_top1", "reports/train_metrics.csv"} <= set(plots), plots.keys()
    bars = plots["reports/plots/per_class.csv"][0]["content"]
    assert bars["mark"]["type"] == "bar" and {r["class"] for r in bars["data"]["values"]}
    line = plots["val_clip_top1"][0]["content"]  # .dvc/plots/line_skip_empty.json: empty cells filtered out
    assert "datum['val_clip_top1'] !== ''" in json.dumps(line["transform"])


@pytest.mark.slow
def test_dvc_repro_end_to_end_is_reproducible(reproduced: Path, tmp_path: Path) -> None:
    project = copy_project(reproduced, tmp_path / "project")
    first_hashes = _stage_out_hashes(project / "dvc.lock")
    first_metrics = json.loads((project / "reports/metrics.json").read_text())
    assert 0.0 <= first_metrics["video_top1"] <= 1.0
    registered = json.loads((project / "reports/registered_model.json").read_text())
    assert registered["version"] == 1 or registered["version"] == "1"

    second = run_cmd(["dvc", "repro"], project)  # only the toolchain check runs; its file is unchanged
    assert re.findall(r"Running stage '(\w+)'", second.stdout) == ["toolchain"], second.stdout

    # trained again from scratch: the same metrics (the data stages' bytes from scratch are
    # test_reproducibility's: the default set against the committed dvc.lock)
    shutil.rmtree(project / "models")
    run_cmd(["dvc", "repro", "--force", "--downstream", "train"], project)
    assert _stage_out_hashes(project / "dvc.lock") == first_hashes
    assert json.loads((project / "reports/metrics.json").read_text()) == first_metrics

    shown = run_cmd(["dvc", "metrics", "show", "--json"], project).stdout
    assert "video_top1" in shown
    _assert_readable_metrics_and_plots(project)

    # dvc exp run recomposes params.yaml from pipeline/conf (Hydra) and reruns only what changed
    tiny = {**TINY, "eval.num_crops": 3}
    overrides = [arg for key, value in tiny.items() for arg in ("-S", f"{key}={value}")]
    experiment = run_cmd(["dvc", "exp", "run", *overrides], project)
    assert re.findall(r"Running stage '(\w+)'", experiment.stdout) == ["toolchain", "evaluate", "register"]
    composed = OmegaConf.load(project / "params.yaml")
    assert composed.eval.num_crops == 3 and composed.train.epochs == TINY["train.epochs"]
    assert json.loads((project / "reports/metrics.json").read_text()).keys() == first_metrics.keys()

    # another ffmpeg build in video.ffmpeg: its version reaches dvc.lock, the data stages rerun
    other = _other_ffmpeg_build(tmp_path / "ffmpeg")
    params = OmegaConf.load(project / "params.yaml")
    OmegaConf.update(params, "video.ffmpeg", str(other))
    OmegaConf.save(params, project / "params.yaml")
    switched = run_cmd(["dvc", "repro", "preprocess"], project)
    assert re.findall(r"Running stage '(\w+)'", switched.stdout) == ["toolchain", "generate", "preprocess"]
    provenance = json.loads((project / "data/shards/provenance.json").read_text())
    assert provenance["ffmpeg_setting"] == str(other)
    assert provenance["toolchain"]["ffmpeg"] == "ffmpeg version 0.0-other-build"


@pytest.mark.scaleout
def test_a_dvc_remote_carries_data_shards_and_model_to_a_fresh_clone(reproduced: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    trip = push_and_clone(reproduced, tmp_path, str(remote))
    missing = run_cmd(["a2net", "pull", "-r", "nosuch"], trip.clone, expect=2)
    assert missing.stderr == "error: no DVC remote named 'nosuch' (configured: storage); see `dvc remote list`\n"
    run_cmd(["dvc", "remote", "add", "--local", "gone", str(tmp_path / "gone")], trip.clone)
    gone = run_cmd(["a2net", "pull", "-r", "gone"], trip.clone, expect=2)
    assert gone.stderr.startswith(f"error: DVC remote 'gone' ({tmp_path / 'gone'}) does not exist;"), gone.stderr
    assert gone.stderr.count("\n") == 1 and not (trip.clone / "data/shards").exists()  # nothing written
    pull_and_check(trip)


def _committed(project: Path) -> str:
    """Commit the pipeline's results (dvc.lock, the cache: false outputs); the new HEAD."""
    run_cmd(["git", "add", "-A"], project)
    run_cmd(["git", "commit", "-qm", "pipeline run"], project)
    return run_cmd(["git", "rev-parse", "HEAD"], project).stdout.strip()


def _store(project: Path):
    """An MlflowClient on ``project``'s own store, mlflow/mlflow.db."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{project / 'mlflow/mlflow.db'}")


def _experiments(project: Path) -> dict[str, dict]:
    """``dvc exp show --json``: experiment name → its params and metrics, flattened per file."""
    shown = json.loads(run_cmd(["dvc", "exp", "show", "--json"], project).stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev["data"]
                metrics = {path: record["data"] for path, record in data["metrics"].items()}
                params = data["params"]["params.yaml"]["data"]
                found[rev["name"]] = {"metrics": metrics, "params": params}
    return found


@pytest.mark.slow
def test_queued_experiments_on_two_workers_land_in_the_project_store(reproduced: Path, tmp_path: Path) -> None:
    """A sweep queued with DVC's syntax and run by two workers at once (each in a temp copy of the
    repo), then a ``--temp`` experiment: every run and version is in the project's
    mlflow/mlflow.db, tagged with its experiment; ``dvc exp show`` names each one's run and
    version; ``dvc exp apply`` leaves a workspace whose register stage works."""
    project = copy_project(reproduced, tmp_path / "project")
    baseline = _committed(project)
    store = _store(project)
    before = {run.info.run_id for run in store.search_runs(store.get_experiment_by_name("a2nets").experiment_id)}
    assert len(before) == 1 and len(store.search_model_versions("name = 'a2net'")) == 1

    tiny = [arg for key, value in TINY.items() for arg in ("-S", f"{key}={value}")]  # -S recomposes params.yaml
    queued = run_cmd(
        ["dvc", "exp", "run", "--queue", *tiny, "-S", "train.lr=0.02,0.1"], project
    )  # Hydra's sweep syntax
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    run_cmd(["dvc", "queue", "start", "-j", "2"], project)
    _wait_for_queue(project)

    experiments = _experiments(project)
    assert len(experiments) == 2, experiments
    runs = {run.info.run_id: run for run in store.search_runs(store.get_experiment_by_name("a2nets").experiment_id)}
    versions = {str(v.version): v for v in store.search_model_versions("name = 'a2net'")}
    assert len(runs) == 3 and len(versions) == 3
    for name, experiment in experiments.items():
        record = experiment["metrics"]["reports/run.json"]
        run = runs[record["mlflow_run"]]
        assert run.data.tags["dvc.exp_name"] == name and run.data.tags["dvc.baseline_rev"] == baseline
        assert float(run.data.params["train.lr"]) == experiment["params"]["train"]["lr"]
        version = versions[record["model_version"]]
        assert version.run_id == run.info.run_id and version.tags["dvc.exp_name"] == name
        assert run.data.metrics["video_top1"] == experiment["metrics"]["reports/metrics.json"]["video_top1"]
    assert {
        float(runs[r["metrics"]["reports/run.json"]["mlflow_run"]].data.params["train.lr"])
        for r in experiments.values()
    } == {0.02, 0.1}
    assert not list((project / ".dvc/tmp/exps").rglob("mlflow.db"))  # no store was made in the temp copies

    temp = run_cmd(["dvc", "exp", "run", "--temp", *tiny, "-S", "train.lr=0.03"], project)  # a temp copy, run now
    [temp_name] = set(_experiments(project)) - set(experiments)
    assert f"'{temp_name}'" in temp.stdout
    [temp_run] = [
        r for r in store.search_runs(store.get_experiment_by_name("a2nets").experiment_id) if r.info.run_id not in runs
    ]
    assert temp_run.data.tags["dvc.exp_name"] == temp_name and temp_run.data.params["train.lr"] == "0.03"
    assert len(store.search_model_versions("name = 'a2net'")) == 4

    name = sorted(experiments)[0]
    run_cmd(["dvc", "exp", "apply", name], project)
    applied = json.loads((project / "reports/registered_model.json").read_text())
    assert applied["version"] == experiments[name]["metrics"]["reports/run.json"]["model_version"]
    registered = run_cmd([sys.executable, "-m", "pipeline.register"], project)  # the experiment's run, found
    assert f"(run {applied['run_id']}," in registered.stdout
    assert len(store.search_model_versions("name = 'a2net'")) == 5


def _wait_for_queue(project: Path, timeout_s: float = 600) -> None:
    """Until ``dvc queue status`` lists nothing queued or running; a failed experiment fails the test."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run_cmd(["dvc", "queue", "status"], project).stdout
        if "Failed" in status:
            logs = "\n".join(p.read_text()[-3000:] for p in (project / ".dvc/tmp/exps").rglob("*.out"))
            pytest.fail(f"a queued experiment failed:\n{status}\n{logs}")
        if not re.search(r"\b(Queued|Running)\b", status):
            return
        time.sleep(3)
    pytest.fail(f"the queue did not finish in {timeout_s} s:\n{status}")


@pytest.mark.slow
def test_bytecode_and_untracked_files_never_enter_a_stage_hash(reproduced: Path, tmp_path: Path) -> None:
    """Compiled bytecode in every code folder and a scratch file beside the model code: ``dvc status``
    still has nothing to run but the always-run toolchain check (deps are tracked files only)."""
    import compileall

    project = copy_project(reproduced, tmp_path / "project")
    for folder in ("a2model", "pipeline"):
        assert compileall.compile_dir(str(project / folder), quiet=1, force=True)
    (project / "a2model/scratch.py").write_text("print('not part of the model')\n")
    status = run_cmd(["dvc", "status"], project).stdout
    assert status.split() == ["toolchain:", "always", "changed"], status
