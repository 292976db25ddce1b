"""Registry against a real ``mlflow server``: register, promotion gate, force, listing."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from omegaconf import OmegaConf

from pipeline.cli import main
from pipeline.core.config import config_md5, load_config, write_params
from pipeline.data.video import encode_video
from pipeline.evaluation.setting import EvalRecord
from pipeline.register import main as register_main
from pipeline.registry.predict import load_model
from pipeline.registry.publish import validation_outcome
from pipeline.serving.bounds import ServingBounds
from pipeline.serving.views import video_scores, video_views
from pipeline.tracking.store import setup_mlflow

from helpers import (
    enter_project_store,
    promote_concurrently,
    read_manifest,
    register_stand_in,
    write_training_output,
)
from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING, STAND_IN_SETTING, StandInNet

server = pytest.mark.slow  # tests on the server: its start and several model exports, ~60 s


def metrics(video_top1: float) -> dict[str, float]:
    return {**GOOD_METRICS, "video_top1": video_top1}


def promote(capsys: pytest.CaptureFixture, name: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what registering printed
    code = main(["promote", "--model-name", name, *args])
    out, err = capsys.readouterr()
    return code, out, err


def aliases(name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in MlflowClient().get_registered_model(name).aliases.items()}


@server
def test_register_logs_pt2_model_with_classes_preprocessing_and_lineage(register_version, tmp_path) -> None:
    registered = register_version("reg-basic")
    client = MlflowClient()
    version = client.get_model_version("reg-basic", registered.version)
    assert version.run_id == registered.run_id
    assert version.tags["validation"] == "passed"
    assert version.tags["video_top1"] == "0.8000"
    assert {"git_commit", "config_md5", "shards_md5", "architecture"} <= version.tags.keys()
    assert "| video_top1 | 0.8000 |" in version.description

    local = mlflow.artifacts.download_artifacts(registered.model_uri, dst_path=str(tmp_path))
    mlmodel = yaml.safe_load(Path(f"{local}/MLmodel").read_text())
    assert Path(f"{local}/artifacts/classes.txt").read_text().split("\n")[:-1] == CLASSES
    assert json.loads(Path(f"{local}/artifacts/preprocessing.json").read_text()) == asdict(PREPROCESSING) | {
        "mean": list(PREPROCESSING.mean),
        "std": list(PREPROCESSING.std),
    }
    assert mlmodel["metadata"]["classes"] == CLASSES
    assert mlmodel["metadata"]["preprocessing"]["crop_size"] == PREPROCESSING.crop_size
    assert sorted(os.listdir(f"{local}/artifacts")) == ["classes.txt", "model.pt2", "preprocessing.json"]  # no pickle
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    net = load_model(registered.model_uri).net
    for batch in (1, 3):  # the batch dimension was exported dynamic
        assert net(torch.zeros(batch, *PREPROCESSING.input_shape)).shape == (batch, len(CLASSES))


@server
def test_promote_to_staging_then_production(register_version, capsys) -> None:
    v1 = register_version("reg-flow").version
    assert promote(capsys, "reg-flow", "--version", v1, "--to", "staging")[0] == 0
    assert promote(capsys, "reg-flow", "--version", v1, "--to", "production")[0] == 0
    assert aliases("reg-flow") == {"staging": v1, "production": v1}
    tags = MlflowClient().get_model_version("reg-flow", v1).tags
    assert tags["promoted_to"] == "production" and "promoted_at" in tags
    assert "forced_by" not in tags


@server
def test_worse_version_is_refused_and_one_within_margin_taken(register_version, capsys) -> None:
    v1 = register_version("reg-gate", metrics(0.80)).version
    worse = register_version("reg-gate", metrics(0.70)).version
    close = register_version("reg-gate", metrics(0.795)).version  # margin is 0.01
    assert promote(capsys, "reg-gate", "--version", v1, "--to", "staging")[0] == 0

    code, _, err = promote(capsys, "reg-gate", "--version", worse, "--to", "staging")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("refused:") and "video_top1=0.7000" in err
    assert aliases("reg-gate") == {"staging": v1}

    assert promote(capsys, "reg-gate", "--version", close, "--to", "staging")[0] == 0
    assert aliases("reg-gate") == {"staging": close, "previous_staging": v1}


@server
def test_the_gate_compares_only_evaluations_of_the_same_data_and_views(register_version, capsys) -> None:
    """A better score measured on 1×1 views of other shards cannot displace the holder; the refusal
    names what differs; --force --reason still moves the alias."""
    holder = register_version("reg-alike", metrics(0.80)).version
    assert promote(capsys, "reg-alike", "--version", holder, "--to", "staging")[0] == 0
    easier = replace(STAND_IN_SETTING, data_digest="e" * 64, num_clips=1, num_crops=1)
    candidate = register_version("reg-alike", metrics(0.95), setting=easier).version

    code, _, err = promote(capsys, "reg-alike", "--version", candidate, "--to", "staging")
    assert code == 1 and err.count("\n") == 1
    assert err == (
        f"refused: cannot compare video_top1 of version {candidate} and staging version {holder}: they were "
        f"evaluated differently (data_digest {'e' * 12} ≠ {'d' * 12}; num_clips 1 ≠ 3; num_crops 1 ≠ 3), and the "
        "candidate's evaluation data (/stand-in/shards) is not on disk as it was to score both on it; evaluate "
        "both on the same data, split and views, or use --force --reason\n"
    )
    assert aliases("reg-alike") == {"staging": holder}
    alike = register_version("reg-alike", metrics(0.85)).version  # the holder's setting: compared, taken
    assert promote(capsys, "reg-alike", "--version", alike, "--to", "staging")[0] == 0
    forced = ("--force", "--reason", "new validation set")
    assert promote(capsys, "reg-alike", "--version", candidate, "--to", "staging", *forced)[0] == 0
    assert aliases("reg-alike")["staging"] == candidate


@server
@pytest.mark.parametrize("validation", ["failed", "missing"])
def test_unvalidated_version_is_refused(register_version, capsys, validation: str) -> None:
    name = f"reg-unvalidated-{validation}"
    version = register_version(name, validation=validation).version
    code, _, err = promote(capsys, name, "--version", version, "--to", "staging")
    assert code == 1 and f"validation={validation}" in err
    assert aliases(name) == {}


@server
def test_force_with_reason_overrides_gate_and_records_who_and_why(register_version, capsys, monkeypatch) -> None:
    version = register_version("reg-force", validation="failed").version
    code, _, err = promote(capsys, "reg-force", "--version", version, "--to", "staging", "--force")
    assert code == 2 and "--reason" in err

    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    code, out, _ = promote(
        capsys, "reg-force", "--version", version, "--to", "staging", "--force", "--reason", "hotfix for the demo"
    )
    assert code == 0 and "[forced]" in out
    tags = MlflowClient().get_model_version("reg-force", version).tags
    assert tags["forced_by"] == "alice"
    assert tags["force_reason"] == "hotfix for the demo"
    assert tags["promoted_at"].startswith("20")
    assert aliases("reg-force") == {"staging": version}


@server
def test_production_only_takes_the_staging_version(register_version, capsys) -> None:
    v1 = register_version("reg-prod").version
    v2 = register_version("reg-prod").version
    code, _, err = promote(capsys, "reg-prod", "--version", v1, "--to", "production")
    assert code == 1 and "no version holds staging" in err
    assert promote(capsys, "reg-prod", "--version", v1, "--to", "staging")[0] == 0
    code, _, err = promote(
        capsys, "reg-prod", "--version", v2, "--to", "production", "--force", "--reason", "skip staging"
    )
    assert code == 1 and f"version {v1} holds staging" in err
    assert aliases("reg-prod") == {"staging": v1}


@server
def test_production_is_compared_with_the_production_holder(register_version, capsys) -> None:
    name = "reg-prod-gate"
    best = register_version(name, metrics(0.90)).version
    worse = register_version(name, metrics(0.60)).version
    for version, alias in ((best, "staging"), (best, "production")):
        assert promote(capsys, name, "--version", version, "--to", alias)[0] == 0
    assert promote(capsys, name, "--version", worse, "--to", "staging", "--force", "--reason", "test")[0] == 0
    code, _, err = promote(capsys, name, "--version", worse, "--to", "production")  # staging holds it
    assert code == 1 and f"worse than production version {best} (0.9000)" in err, err
    assert aliases(name)["production"] == best


@server
def test_unknown_version_is_a_clear_error(register_version, capsys) -> None:
    register_version("reg-unknown")
    code, _, err = promote(capsys, "reg-unknown", "--version", "99", "--to", "staging")
    assert code == 2 and err == "error: model 'reg-unknown' has no version 99; see `a2net promote --list`\n"


@server
def test_list_shows_versions_aliases_validation_and_metrics(register_version, capsys) -> None:
    v1 = register_version("reg-list", metrics(0.80)).version
    v2 = register_version("reg-list", metrics(0.60), validation="failed").version
    promote(capsys, "reg-list", "--version", v1, "--to", "staging")
    code, out, _ = promote(capsys, "reg-list", "--list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("| version | aliases | validation | video_top1")
    assert lines[2].startswith(f"| {v2} | - | failed | 0.6000 |")
    assert lines[3].startswith(f"| {v1} | staging | passed | 0.8000 |")
    assert "c0ffee" in lines[3] and "s" * 12 in lines[3]


@server
def test_list_marks_aliases_set_outside_the_gate(register_version, capsys) -> None:
    name = "reg-outside"
    v1 = register_version(name).version
    v2 = register_version(name).version
    assert promote(capsys, name, "--version", v1, "--to", "staging")[0] == 0
    assert promote(capsys, name, "--version", v2, "--to", "staging")[0] == 0  # v1 keeps @previous_staging
    assert "outside" not in promote(capsys, name, "--list")[1]
    MlflowClient().set_registered_model_alias(name, "production", v2)  # as the UI's alias editor does
    MlflowClient().set_registered_model_alias(name, "champion", v1)
    code, out, _ = promote(capsys, name, "--list")
    cells = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1] for line in out.splitlines()[2:4]}
    assert code == 0 and cells == {
        v2: "production (set outside a2net promote), staging",
        v1: "champion (set outside a2net promote), previous_staging",
    }
    assert out.splitlines()[5].startswith("(set outside a2net promote): the alias was moved past the quality gate")
    assert promote(capsys, name, "--version", v2, "--to", "production")[0] == 0  # the gate now records it
    assert "production (set" not in promote(capsys, name, "--list")[1]


@pytest.mark.parametrize(
    "aliases, history, outside",
    [
        ({"staging": "2"}, [], {"staging"}),  # never promoted
        ({"staging": "2"}, [("staging", "1", None)], {"staging"}),  # moved after its promotion
        ({"staging": "2", "previous_staging": "1"}, [("staging", "1", None), ("staging", "2", "1")], set()),
        (
            {"staging": "2", "previous_staging": "1"},
            [("staging", "1", None), ("staging", "2", "2")],
            {"previous_staging"},
        ),
        ({"staging": "2", "production": "2"}, [("staging", "2", None), ("production", "2", None)], set()),
    ],
)
def test_set_outside_gate_compares_each_alias_with_its_last_promotion(aliases, history, outside) -> None:
    from pipeline.registry.promotion import set_outside_gate

    tags = history_tags(history)
    assert set_outside_gate(aliases, {**tags, "other": "tag", "promotion.note": "typed in the UI"}) == outside


def history_tags(history: list[tuple[str, str, str | None]]) -> dict[str, str]:
    """The registered model's tags that ``a2net promote`` writes for (alias, version, previous) entries."""
    return {
        f"promotion.{alias}.2024010{i}T000000000000Z-0000": json.dumps(
            {"alias": alias, "version": version, "previous": previous}
        )
        for i, (alias, version, previous) in enumerate(history)
    }


@pytest.mark.parametrize(
    "history, expected",
    [
        ([("staging", "1", None), ("staging", "2", "1")], {"staging": "2", "previous_staging": "1"}),
        ([("staging", "2", None), ("staging", "2", "2")], {"staging": "2"}),  # the holder again: no previous
        ([("staging", "1", None), ("production", "1", None)], {"staging": "1", "production": "1"}),
    ],
)
def test_gated_aliases_are_where_the_last_promotions_left_each_alias(history, expected) -> None:
    from pipeline.registry.promotion import gated_aliases

    assert gated_aliases(history_tags(history)) == expected


@server
def test_predict_over_http_uses_the_staging_model(register_version, capsys, tmp_path) -> None:
    net = StandInNet(seed=3)
    version = register_version("reg-predict", net=net).version
    assert promote(capsys, "reg-predict", "--version", version, "--to", "staging")[0] == 0
    rng = np.random.default_rng(1)
    video = encode_video(rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8), tmp_path / "clip.mp4", fps=10)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video\n")

    code = main(["predict", str(video), str(not_video), "--model", "models:/reg-predict@staging", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith(f"error: {not_video}: not a readable video")
    [prediction] = json.loads(out)["predictions"]
    expected = video_scores(net, video_views(video, PREPROCESSING)).topk(5)
    assert prediction["labels"] == [CLASSES[i] for i in expected.indices.tolist()]
    assert prediction["probabilities"] == pytest.approx(expected.values.tolist(), abs=1e-5)


# ------------------------------------------------- the register stage on the embedded SQLite store


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project directory with its own params.yaml and SQLite store."""
    enter_project_store(tmp_path, monkeypatch)
    write_params(tmp_path / "params.yaml")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_register_stage_registers_last_pt_with_the_runs_lineage(project: Path) -> None:
    import a2model

    cfg = load_config(["train.epochs=2"])  # the run's own config, not params.yaml's 60 epochs
    name = cfg.model.net.name
    tags = {
        "git_commit": "abc123",
        "data.dvc_md5": "d" * 32 + ".dir",
        "toolchain.ffmpeg": "ffmpeg version n9.9",
        "toolchain.numpy": "9.9",
    }
    net, run = write_training_output(cfg, ["archery", "bowling", "cartwheeling"], tags)
    summary = Path(cfg.validate.report_dir) / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"success": False, "expectations": []}))

    assert register_main([]) == 0

    registered = json.loads(Path("reports/registered_model.json").read_text())
    assert registered["run_id"] == run.info.run_id
    assert registered["model_uri"] == f"models:/a2net/{registered['version']}"
    tags = MlflowClient().get_model_version("a2net", registered["version"]).tags
    assert tags["git_commit"] == "abc123" and tags["shards_md5"] == "d" * 32 + ".dir"
    assert tags["config_md5"] == config_md5(OmegaConf.to_container(cfg))
    assert tags["config_md5"] != config_md5(OmegaConf.to_container(load_config()))
    assert tags["toolchain.ffmpeg"] == "ffmpeg version n9.9" and tags["toolchain.numpy"] == "9.9"
    assert tags["validation"] == "failed" and tags["architecture"] == name
    exported = load_model(registered["model_uri"]).net
    clips = torch.randn(3, *a2model.MODEL_INPUTS[name])  # another batch size than the example's
    torch.testing.assert_close(exported(clips), net(clips), rtol=1e-4, atol=1e-4)


def test_the_registered_model_serves_within_the_register_serving_bounds(
    project: Path, noise_video: Path, tmp_path: Path
) -> None:
    """The register stage writes register.serving into the model: more rows than max_rows are
    refused; a row over max_video_mb, longer than max_seconds, of more declared source frames than
    max_source_frames or of larger frames than max_frame_pixels gets an error (the defaults would
    answer all of them); an empty row gets its own error, a video within the bounds its labels and
    probabilities; the keys with no effect on this request are in the model's config as given."""
    from mlflow.exceptions import MlflowException

    small = ["model=tiny_plain", "train.epochs=1", "model.clip.num_frames=4", "model.clip.crop_size=32"]  # fast export
    write_training_output(load_config(small), ["archery", "bowling", "cartwheeling"])
    bounds = ["register.serving.max_rows=2", "register.serving.max_video_mb=0.5", "register.serving.max_seconds=1.5",
              "register.serving.max_source_frames=40", "register.serving.max_frame_pixels=3072",
              "register.serving.decode_cpu_seconds=7", "register.serving.request_seconds=40",
              "register.serving.concurrent_decodes=3", "register.serving.max_request_mb=1.5"]  # fmt: skip
    assert register_main(bounds) == 0

    served = mlflow.pyfunc.load_model(json.loads(Path("reports/registered_model.json").read_text())["model_uri"])
    assert ServingBounds.from_config(served.model_config) == ServingBounds(
        max_rows=2, max_video_bytes=2**19, max_seconds=1.5, max_frame_pixels=3072, max_source_frames=40,
        decode_cpu_seconds=7, request_seconds=40.0, concurrent_decodes=3, max_request_bytes=3 * 2**19,
    )  # fmt: skip
    with pytest.raises(MlflowException, match="3 videos in one request; send at most 2"):
        served.predict(pd.DataFrame({"video": [""] * 3}))
    over_half_a_mb = base64.b64encode(bytes(2**19 + 1)).decode()
    too_big, too_long = served.predict(pd.DataFrame({"video": [over_half_a_mb, noise_b64(tmp_path, 2.0)]}))
    too_many, too_large = served.predict(
        pd.DataFrame({"video": [base64.b64encode(noise_video.read_bytes()).decode(), noise_b64(tmp_path, 1.0, 96)]})
    )
    empty, within = served.predict(pd.DataFrame({"video": ["", noise_b64(tmp_path, 1.0)]}))
    assert too_big["error"] == f"row 0: over the {2**19}-byte limit per video"
    assert too_long["error"] == "row 1: longer than 15 frames (1.5 s at 10 fps); give a clip of at most 1.5 s"
    assert too_many["error"] == (
        "row 0: 62 source frames (25 fps for 2.5 s), over the 40-frame limit (register.serving.max_source_frames)"
    )
    assert too_large["error"] == "row 1: 96x72 frames, over the 3072-pixel limit (register.serving.max_frame_pixels)"
    assert empty == {"labels": [], "probabilities": [], "error": "row 0: empty; give the base64 bytes of a video file"}
    assert set(within) == {"labels", "probabilities", "error"} and within["error"] is None
    assert sorted(within["labels"]) == ["archery", "bowling", "cartwheeling"]  # top_k 5 of 3 classes: all
    assert within["probabilities"] == sorted(within["probabilities"], reverse=True)
    assert sum(within["probabilities"]) == pytest.approx(1, abs=1e-5)


def noise_b64(folder: Path, seconds: float, width: int = 64) -> str:
    """Base64 of a 10 fps noise video of ``seconds``, ``width`` x 3/4 ``width`` (64x48: within 0.5 MiB)."""
    frames = np.random.default_rng(1).integers(
        0, 256, size=(round(seconds * 10), width * 3 // 4, width, 3), dtype=np.uint8
    )
    path = folder / f"noise_{seconds:g}s_{width}.mp4"
    return base64.b64encode(encode_video(frames, path, fps=10).read_bytes()).decode()


def test_a2net_promote_gates_on_promote_metric_within_promote_margin(project: Path, capsys) -> None:
    """A version worse by 0.15 on clip_top1 (and by 0.5 on video_top1) is taken with
    promote.metric=clip_top1 and promote.margin=0.2 in params.yaml; one worse by 0.25 is not."""
    write_params(project / "params.yaml", ["promote.metric=clip_top1", "promote.margin=0.2"])
    experiment = setup_mlflow("a2nets")
    held, within, beyond = (
        register_stand_in(experiment, "gated", {**GOOD_METRICS, "video_top1": video, "clip_top1": clip}).version
        for video, clip in ((0.8, 0.7), (0.3, 0.55), (0.9, 0.3))
    )
    assert promote(capsys, "gated", "--version", held, "--to", "staging")[0] == 0
    assert promote(capsys, "gated", "--version", within, "--to", "staging")[0] == 0
    code, _, err = promote(capsys, "gated", "--version", beyond, "--to", "staging")
    assert code == 1 and "clip_top1=0.3000" in err and "by more than the margin 0.2" in err, err
    assert aliases("gated")["staging"] == within


def test_a2net_promote_prints_the_move_the_table_and_the_history_on_the_local_store(project: Path, capsys) -> None:
    """The project's own SQLite store (the server tests repeat this over HTTP): the version table
    before and after, what each promotion prints, and one history line per move, oldest first."""
    from pipeline.registry.version_tags import HEADLINE_METRICS

    experiment = setup_mlflow("a2nets")
    commit = "0123456789abcdef0123456789abcdef01234567"
    v1, v2 = (
        register_stand_in(experiment, "local-cli", metrics(top1), git_commit=commit).version for top1 in (0.8, 0.9)
    )
    source = MlflowClient().get_model_version("local-cli", v1).source
    v3 = str(MlflowClient().create_model_version("local-cli", source).version)  # by hand: no lineage tags
    code, out, _ = promote(capsys, "local-cli", "--list")
    header, _, *rows = (line.removeprefix("| ").removesuffix(" |").split(" | ") for line in out.splitlines())
    assert code == 0 and header == [
        "version", "aliases", "validation", *HEADLINE_METRICS, "run id", "git commit", "shards md5", "created"
    ]  # fmt: skip
    cells = [dict(zip(header, row)) for row in rows]
    assert [(c["version"], c["aliases"]) for c in cells] == [(v3, "-"), (v2, "-"), (v1, "-")]
    assert [cells[0][column] for column in ("validation", "git commit", "shards md5")] == [
        "missing",
        "unknown",
        "unknown",
    ]
    assert cells[1]["git commit"] == commit[:12] and cells[1]["shards md5"] == "s" * 12
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", c["created"]) for c in cells), cells

    assert promote(capsys, "local-cli", "--version", v1, "--to", "staging")[:2] == (
        0,
        f"models:/local-cli@staging -> version {v1}\n",
    )
    assert promote(capsys, "local-cli", "--version", v2, "--to", "staging")[:2] == (
        0,
        f"models:/local-cli@staging -> version {v2} (was version {v1}, now @previous_staging)\n",
    )
    code, out, _ = promote(capsys, "local-cli", "--list")
    rows = [line.split(" | ")[:4] for line in out.splitlines()[3:]]
    assert code == 0 and rows == [
        [f"| {v2}", "staging", "passed", "0.9000"],
        [f"| {v1}", "previous_staging", "passed", "0.8000"],
    ]
    code, out, _ = promote(capsys, "local-cli", "--history", "--to", "production")
    assert (code, out) == (0, "no promotions of local-cli to @production yet (a2net promote --version N --to ALIAS)\n")
    code, out, _ = promote(capsys, "local-cli", "--history", "--to", "staging")
    stamps, moves = zip(*(line.split("  ", 1) for line in out.splitlines()))
    assert code == 0 and [move.split(" by ")[0] for move in moves] == [
        f"@staging -> {v1} (first holder) promote",
        f"@staging -> {v2} (was version {v1}) promote",
    ]
    times = [datetime.fromisoformat(stamp) for stamp in stamps]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    page = MlflowClient().get_registered_model("local-cli")  # what the MLflow UI's model page shows
    assert "a2net promote --version N --to staging" in page.description
    assert page.tags["current.staging"] == f"version {v2} since {stamps[-1]} ({moves[-1].split(') ', 1)[1]})"
    assert "current.production" not in page.tags


@pytest.mark.parametrize(
    "args",
    [["--version", "1"], ["--to", "staging"], ["--version", "1", "--rollback", "--to", "staging"]],
    ids=["no --to", "no version or --rollback", "both a version and --rollback"],
)
def test_a2net_promote_with_half_a_command_says_what_to_give(project: Path, capsys, args: list[str]) -> None:
    code, _, err = promote(capsys, "any", *args)
    assert code == 2 and err.splitlines()[-1] == (  # before it: MLflow's lines as it makes the new store
        "error: give --version N --to staging|production, or --rollback --to staging|production (or --list, --history)"
    )


def test_register_stage_without_training_output_is_one_clear_line(project: Path, capsys) -> None:
    assert register_main([]) == 2
    assert capsys.readouterr().err == ("error: models/train/run_id.txt not found; run the train stage first\n")


@pytest.mark.parametrize(
    "summary, outcome",
    [
        ({"success": True, "expectations": []}, "passed"),
        ({"success": False, "expectations": []}, "failed"),
        (None, "missing"),
    ],
)
def test_validation_outcome_reads_the_validate_summary(tmp_path, summary, outcome) -> None:
    path = tmp_path / "summary.json"
    if summary is not None:
        path.write_text(json.dumps(summary))
    assert validation_outcome(path) == outcome


# ------------------------------------------------- rollback, history, concurrent promotions


@server
def test_rollback_skips_the_metric_gate_but_not_validation_and_history_keeps_every_promotion(
    register_version, capsys
) -> None:
    name = "reg-rollback"
    v1 = register_version(name, metrics(0.90)).version
    v2 = register_version(name, metrics(0.95)).version
    assert promote(capsys, name, "--version", v1, "--to", "staging")[0] == 0
    assert promote(capsys, name, "--version", v2, "--to", "staging")[0] == 0
    code, _, err = promote(capsys, name, "--version", v1, "--to", "staging")  # the old way: gated
    assert code == 1 and "worse than staging" in err
    code, out, _ = promote(capsys, name, "--rollback", "--to", "staging")
    assert code == 0 and out.strip().endswith(f"-> version {v1} (was version {v2}, now @previous_staging) [rollback]")
    assert aliases(name) == {"staging": v1, "previous_staging": v2}
    code, out, _ = promote(capsys, name, "--history", "--to", "staging")
    assert [line.split("  ")[1].split(" by ")[0] for line in out.splitlines()] == [
        f"@staging -> {v1} (first holder) promote",
        f"@staging -> {v2} (was version {v1}) promote",
        f"@staging -> {v1} (was version {v2}) rollback",
    ]


@server
def test_rollback_without_a_previous_version_or_to_an_unvalidated_one_is_refused(register_version, capsys) -> None:
    name = "reg-rollback-refused"
    bad = register_version(name, validation="failed").version
    good = register_version(name).version
    code, _, err = promote(capsys, name, "--rollback", "--to", "staging")
    assert code == 2 and err == f"error: @staging of '{name}' has no previous version to roll back to\n"
    assert promote(capsys, name, "--version", bad, "--to", "staging", "--force", "--reason", "test")[0] == 0
    assert promote(capsys, name, "--version", good, "--to", "staging")[0] == 0
    code, _, err = promote(capsys, name, "--rollback", "--to", "staging")
    assert code == 1 and f"version {bad} has validation=failed" in err
    assert aliases(name)["staging"] == good


def test_concurrent_promotions_on_the_local_store_are_serialised(project: Path, monkeypatch) -> None:
    from pipeline.registry.promotion import Promotion, promotion_history
    from pipeline.registry.publish import Lineage, log_and_register
    from pipeline.tracking.store import tracking_uri

    experiment = setup_mlflow("a2nets")
    versions = []
    for _ in range(3):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metrics(GOOD_METRICS)
        versions.append(
            log_and_register(
                StandInNet(),
                run_id=run.info.run_id,
                model_name="local",
                architecture="stand_in",
                classes=CLASSES,
                preprocessing=PREPROCESSING,
                lineage=Lineage("c", "p", "s", "passed"),
                evaluation=EvalRecord(run.info.run_id, STAND_IN_SETTING, "", GOOD_METRICS),
            ).version
        )
    MlflowClient().set_registered_model_alias("local", "staging", versions[0])
    done = promote_concurrently("local", versions[1:], monkeypatch, tracking_uri())
    assert all(isinstance(d, Promotion) for d in done), done
    first = next(d for d in done if d.previous == versions[0])
    second = next(d for d in done if d is not first)
    assert second.previous == first.version  # the second names the first: no lost update
    assert aliases("local")["staging"] == second.version
    chain = [(e["previous"], e["version"]) for e in promotion_history(MlflowClient(), "local", "staging")]
    assert chain == [(versions[0], first.version), (first.version, second.version)]


@server
def test_concurrent_promotions_against_a_server_never_both_claim_the_same_predecessor(
    register_version, monkeypatch, mlflow_server
) -> None:
    from pipeline.registry.promotion import Promotion, PromotionRaced

    name = "reg-race"
    v1, v2, v3 = (register_version(name).version for _ in range(3))
    MlflowClient().set_registered_model_alias(name, "staging", v1)
    done = promote_concurrently(name, [v2, v3], monkeypatch, mlflow_server)  # no lock on a server
    succeeded = [d for d in done if isinstance(d, Promotion)]
    assert any(isinstance(d, PromotionRaced) for d in done), done
    assert len(succeeded) <= 1
    if succeeded:
        assert aliases(name)["staging"] == succeeded[0].version


def test_a2net_outside_a_project_says_where_it_looked_and_creates_nothing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["promote", "--list"], ["ui"], ["predict", "x.mp4", "--model", "models:/a2net@staging"]):
        assert main(args) == 2
        assert capsys.readouterr().err == (
            f"error: no MLflow store: no mlflow/mlflow.db (or mlflow/ beside dvc.yaml) in {tmp_path} "
            "or its parents; run a2net inside the project or set MLFLOW_TRACKING_URI\n"
        )
    assert not any(tmp_path.iterdir())


def test_the_project_store_is_found_from_a_subfolder(tmp_path) -> None:
    from pipeline.tracking.store import project_store

    (tmp_path / "mlflow").mkdir()
    (tmp_path / "docs/deep").mkdir(parents=True)
    assert project_store(tmp_path / "docs/deep") is None  # no dvc.yaml, no database: not a project
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert project_store(tmp_path / "docs/deep") == tmp_path / "mlflow"


def constant_net(num_classes: int, answer: int) -> torch.nn.Module:
    """A tiny_plain net that answers class ``answer`` whatever it sees (zero weights, one-hot bias)."""
    import a2model

    net = a2model.build_model("tiny_plain", num_classes=num_classes).eval()
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(10.0 * torch.nn.functional.one_hot(torch.tensor(answer), num_classes))
    return net


def test_unlike_evaluations_are_scored_again_on_the_candidates_data(project, training_data, capsys, tmp_path) -> None:
    """Champion/challenger: the holder was evaluated elsewhere, so both are scored on the
    candidate's validation shards with its views. A candidate that claims 0.99 on its own record
    but answers a class no validation video has is refused; one as good as the holder there is
    taken, with both scores as tags; with its data gone, the refusal says so."""
    from pipeline.evaluation.setting import EvalSetting, split_digest
    from pipeline.registry.publish import Lineage, log_and_register
    from pipeline.serving.views import Preprocessing

    root, shards = training_data
    classes = (root / "classes.txt").read_text().splitlines()
    rows = read_manifest(shards).values()
    labels = [int(r["label_index"]) for r in rows if r["split"] == "validate" and r["status"] == "ok"]
    right = max(set(labels), key=labels.count)
    wrong = next(i for i in range(len(classes)) if i not in labels)
    share = labels.count(right) / len(labels)  # the holder's video top-1 on these shards
    here = EvalSetting(split_digest(shards, "validate"), "validate", num_clips=1, num_crops=1, crop_size=32)
    prep = Preprocessing(10, 32, 90, 4, 1, 32, 1, 1, (0.45,) * 3, (0.225,) * 3)
    experiment = setup_mlflow("a2nets")

    def register(answer: int, setting: EvalSetting, top1: float, shards_dir: Path) -> str:
        with mlflow.start_run(experiment_id=experiment) as run:
            pass
        record = EvalRecord(run.info.run_id, setting, str(shards_dir), metrics(top1))
        lineage = Lineage("c", "p", "s", "passed")
        net = constant_net(len(classes), answer)
        return log_and_register(
            net, run_id=run.info.run_id, model_name="duel", architecture="tiny_plain", classes=classes,
            preprocessing=prep, lineage=lineage, evaluation=record,
        ).version  # fmt: skip

    holder = register(right, replace(here, data_digest="f" * 64, num_crops=3), 0.30, tmp_path / "gone")
    assert promote(capsys, "duel", "--version", holder, "--to", "staging")[0] == 0

    boaster = register(wrong, here, 0.99, shards)
    code, _, err = promote(capsys, "duel", "--version", boaster, "--to", "staging")
    assert code == 1 and err == (
        f"refused: version {boaster} has video_top1=0.0000, worse than staging version {holder} ({share:.4f}) "
        f"(both scored on the candidate's evaluation data {here.fingerprint}) by more than the margin 0.01; "
        "use --force --reason to override\n"
    )

    peer = register(right, here, 0.20, shards)  # its record says worse; on the same data it is as good
    code, out, _ = promote(capsys, "duel", "--version", peer, "--to", "staging")
    assert code == 0 and out.endswith(f"video_top1 {share:.4f} vs the holder's {share:.4f}\n"), out
    tags = MlflowClient().get_model_version("duel", peer).tags
    assert tags["gate.rescored_on"] == here.fingerprint
    assert float(tags["gate.candidate_video_top1"]) == float(tags["gate.holder_video_top1"]) == pytest.approx(share)

    moved = tmp_path / "moved"
    shutil.copytree(shards, moved)
    orphan = register(right, replace(here, num_crops=3), 0.9, moved)
    shutil.rmtree(moved)
    code, _, err = promote(capsys, "duel", "--version", orphan, "--to", "staging")
    assert code == 1 and f"the candidate's evaluation data ({moved}) is not on disk as it was" in err
    assert "num_crops 3 ≠ 1" in err and aliases("duel")["staging"] == peer


def test_a_recorded_relative_shards_dir_is_the_projects_wherever_promote_runs(tmp_path) -> None:
    """evaluate records data.shards_dir as configured (a queued experiment's temp copy is deleted);
    a2net promote, run from docs/ or the root, finds the workspace's shards."""
    from pipeline.registry.rescore import project_path

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "docs").mkdir()
    assert project_path("data/shards", tmp_path / "docs") == tmp_path.resolve() / "data/shards"
    assert project_path("data/shards", tmp_path) == tmp_path.resolve() / "data/shards"
    assert project_path("/abs/shards", tmp_path / "docs") == Path("/abs/shards")
