"""The whole pipeline through real DVC in a temp git repo: runs, reruns only the toolchain check the
second time, the training rerun from scratch gives the same metrics, ``dvc metrics show`` stays
narrow and the plots are declared, ``dvc exp run -S eval.num_crops=3`` recomposes params.yaml and
reruns only the stages it changes, and another ffmpeg build in
``video.ffmpeg`` reruns the data stages with its version recorded. And a DVC remote round trip: push,
a fresh git clone pulls byte-identical outputs, and ``dvc repro`` there has nothing to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from helpers import tree_hashes

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "generate.train_per_class": 6,
    "generate.validate_per_class": 2,
    "generate.num_missing": 1,
    "generate.num_corrupt": 1,
    "data.samples_per_shard": 8,
    "validate.min_clips_per_class": 2,
    "validate.max_missing_fraction": 0.2,
    "validate.max_failed_fraction": 0.2,
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.num_workers": 0,
    "eval.num_clips": 1,
    "eval.num_crops": 1,
}


def _run(args: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="False")
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=900)
    assert result.returncode == expect, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one ``dvc repro``; the tests work on copies of it."""
    project = _project_copy(tmp_path_factory.mktemp("reproduced") / "project")
    _run(["dvc", "repro"], project)
    return project


def _copy(project: Path, dest: Path) -> Path:
    """``project`` (git repo, DVC cache, outputs, MLflow store) at ``dest``."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


OUTPUT_FOLDERS = ("data/", "models/", "reports/")  # the pipeline's, committed ones included


def _project_copy(dest: Path) -> Path:
    """The tracked files of this checkout (with uncommitted edits), but no pipeline output, in a
    fresh git repo."""
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, text=True, capture_output=True, check=True
    ).stdout.split()
    for name in tracked:
        if (REPO / name).is_file() and not name.startswith(("tests/", "benchmarks/", "docs/", *OUTPUT_FOLDERS)):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = OmegaConf.load(dest / "params.yaml")
    for key, value in TINY.items():
        OmegaConf.update(params, key, value)
    OmegaConf.save(params, dest / "params.yaml")
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "t"],  # dvc exp run commits experiments
        ["git", "config", "user.email", "t@t"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        subprocess.run(args, cwd=dest, check=True)
    return dest


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
    table = _run(["dvc", "metrics", "show"], project).stdout
    assert "video_top1" in table and "mlflow_run" in table and "per_class" not in table, table
    test_metrics = _run(["dvc", "metrics", "show", "reports/metrics.json"], project).stdout
    assert max(len(line) for line in test_metrics.splitlines()) <= 120, test_metrics
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    assert {"reports/plots/per_class.csv", "val_clip_top1", "reports/train_metrics.csv"} <= set(plots), plots.keys()
    bars = plots["reports/plots/per_class.csv"][0]["content"]
    assert bars["mark"]["type"] == "bar" and {r["class"] for r in bars["data"]["values"]}
    line = plots["val_clip_top1"][0]["content"]  # .dvc/plots/line_skip_empty.json: empty cells filtered out
    assert "datum['val_clip_top1'] !== ''" in json.dumps(line["transform"])


@pytest.mark.slow
def test_dvc_repro_end_to_end_is_reproducible(reproduced: Path, tmp_path: Path) -> None:
    project = _copy(reproduced, tmp_path / "project")
    first_hashes = _stage_out_hashes(project / "dvc.lock")
    first_metrics = json.loads((project / "reports/metrics.json").read_text())
    assert 0.0 <= first_metrics["video_top1"] <= 1.0
    registered = json.loads((project / "reports/registered_model.json").read_text())
    assert registered["version"] == 1 or registered["version"] == "1"

    second = _run(["dvc", "repro"], project)  # only the toolchain check runs; its file is unchanged
    assert re.findall(r"Running stage '(\w+)'", second.stdout) == ["toolchain"], second.stdout

    # trained again from scratch: the same metrics (the data stages' bytes from scratch are
    # test_reproducibility's: the default set against the committed dvc.lock)
    shutil.rmtree(project / "models")
    _run(["dvc", "repro", "--force", "--downstream", "train"], project)
    assert _stage_out_hashes(project / "dvc.lock") == first_hashes
    assert json.loads((project / "reports/metrics.json").read_text()) == first_metrics

    shown = _run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "video_top1" in shown
    _assert_readable_metrics_and_plots(project)

    # dvc exp run recomposes params.yaml from pipeline/conf (Hydra) and reruns only what changed
    tiny = {**TINY, "eval.num_crops": 3}
    overrides = [arg for key, value in tiny.items() for arg in ("-S", f"{key}={value}")]
    experiment = _run(["dvc", "exp", "run", *overrides], project)
    assert re.findall(r"Running stage '(\w+)'", experiment.stdout) == ["toolchain", "evaluate", "register"]
    composed = OmegaConf.load(project / "params.yaml")
    assert composed.eval.num_crops == 3 and composed.train.epochs == TINY["train.epochs"]
    assert json.loads((project / "reports/metrics.json").read_text()).keys() == first_metrics.keys()

    # another ffmpeg build in video.ffmpeg: its version reaches dvc.lock, the data stages rerun
    other = _other_ffmpeg_build(tmp_path / "ffmpeg")
    params = OmegaConf.load(project / "params.yaml")
    OmegaConf.update(params, "video.ffmpeg", str(other))
    OmegaConf.save(params, project / "params.yaml")
    switched = _run(["dvc", "repro", "preprocess"], project)
    assert re.findall(r"Running stage '(\w+)'", switched.stdout) == ["toolchain", "generate", "preprocess"]
    provenance = json.loads((project / "data/shards/provenance.json").read_text())
    assert provenance["ffmpeg_setting"] == str(other)
    assert provenance["toolchain"]["ffmpeg"] == "ffmpeg version 0.0-other-build"


def _outputs(project: Path) -> list[str]:
    """Every output path of every stage in ``project``'s dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def _content(path: Path) -> dict[str, str] | bytes:
    """A folder's file hashes, or a file's bytes."""
    return tree_hashes(path) if path.is_dir() else path.read_bytes()


@pytest.mark.scaleout
def test_a_dvc_remote_carries_data_shards_and_model_to_a_fresh_clone(reproduced: Path, tmp_path: Path) -> None:
    origin = _copy(reproduced, tmp_path / "origin")
    remote = tmp_path / "remote"
    remote.mkdir()
    _run(["dvc", "remote", "add", "-d", "storage", str(remote)], origin)
    _run(["git", "add", "-A"], origin)  # dvc.lock, .dvc/config and the cache: false outputs
    _run(["git", "commit", "-qm", "pipeline run"], origin)
    _run(["dvc", "push"], origin)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    missing = _run(["a2net", "pull", "-r", "nosuch"], clone, expect=2)
    assert missing.stderr == "error: no DVC remote named 'nosuch' (configured: storage); see `dvc remote list`\n"
    _run(["dvc", "remote", "add", "--local", "gone", str(tmp_path / "gone")], clone)
    gone = _run(["a2net", "pull", "-r", "gone"], clone, expect=2)
    assert gone.stderr.startswith(f"error: DVC remote 'gone' ({tmp_path / 'gone'}) does not exist;"), gone.stderr
    assert gone.stderr.count("\n") == 1 and not (clone / "data/shards").exists()  # nothing written

    _run(["a2net", "pull"], clone)  # the default remote
    outputs = _outputs(origin)
    assert {"data/synthetic", "data/shards", "models/train", "reports/metrics.json"} <= set(outputs)
    for out in outputs:
        assert _content(clone / out) == _content(origin / out), out
    again = _run(["dvc", "repro"], clone)  # only the always-run toolchain check; its record is unchanged
    assert re.findall(r"Running stage '(\w+)'", again.stdout) == ["toolchain"], again.stdout
    assert _run(["git", "status", "--porcelain"], clone).stdout == ""


def _committed(project: Path) -> str:
    """Commit the pipeline's results (dvc.lock, the cache: false outputs); the new HEAD."""
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-qm", "pipeline run"], project)
    return _run(["git", "rev-parse", "HEAD"], project).stdout.strip()


def _store(project: Path):
    """An MlflowClient on ``project``'s own store, mlflow/mlflow.db."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{project / 'mlflow/mlflow.db'}")


def _experiments(project: Path) -> dict[str, dict]:
    """``dvc exp show --json``: experiment name → its params and metrics, flattened per file."""
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], project).stdout)
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
    project = _copy(reproduced, tmp_path / "project")
    baseline = _committed(project)
    store = _store(project)
    before = {run.info.run_id for run in store.search_runs(store.get_experiment_by_name("a2nets").experiment_id)}
    assert len(before) == 1 and len(store.search_model_versions("name = 'a2net'")) == 1

    tiny = [arg for key, value in TINY.items() for arg in ("-S", f"{key}={value}")]  # -S recomposes params.yaml
    queued = _run(["dvc", "exp", "run", "--queue", *tiny, "-S", "train.lr=0.02,0.1"], project)  # Hydra's sweep syntax
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    _run(["dvc", "queue", "start", "-j", "2"], project)
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

    temp = _run(["dvc", "exp", "run", "--temp", *tiny, "-S", "train.lr=0.03"], project)  # a temp copy, run now
    [temp_name] = set(_experiments(project)) - set(experiments)
    assert f"'{temp_name}'" in temp.stdout
    [temp_run] = [
        r for r in store.search_runs(store.get_experiment_by_name("a2nets").experiment_id) if r.info.run_id not in runs
    ]
    assert temp_run.data.tags["dvc.exp_name"] == temp_name and temp_run.data.params["train.lr"] == "0.03"
    assert len(store.search_model_versions("name = 'a2net'")) == 4

    name = sorted(experiments)[0]
    _run(["dvc", "exp", "apply", name], project)
    applied = json.loads((project / "reports/registered_model.json").read_text())
    assert applied["version"] == experiments[name]["metrics"]["reports/run.json"]["model_version"]
    registered = _run([sys.executable, "-m", "pipeline.register"], project)  # the experiment's run, found
    assert f"(run {applied['run_id']}," in registered.stdout
    assert len(store.search_model_versions("name = 'a2net'")) == 5


def _wait_for_queue(project: Path, timeout_s: float = 600) -> None:
    """Until ``dvc queue status`` lists nothing queued or running; a failed experiment fails the test."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], project).stdout
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

    project = _copy(reproduced, tmp_path / "project")
    for folder in ("a2model", "pipeline"):
        assert compileall.compile_dir(str(project / folder), quiet=1, force=True)
    (project / "a2model/scratch.py").write_text("print('not part of the model')\n")
    status = _run(["dvc", "status"], project).stdout
    assert status.split() == ["toolchain:", "always", "changed"], status
