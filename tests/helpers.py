"""Plain helpers shared by the test modules (the shared fixtures are in conftest.py).

- ``free_port``: a free TCP port on 127.0.0.1 (DDP rendezvous, an ``mlflow server``).
- A tiny Kinetics-layout root written with real ffmpeg (``write_kinetics_root``: ``CLASSES``,
  ``GOOD_CLIPS``, ``FAULTS``), the preprocess stage run on it (``run_stage``), its manifest.
- ``iter_shard_clips``: every clip of a shard with all its JPEG frames (test-side reader).
- ``tiny_overrides`` / ``tiny_config``: the composed config of a 2-epoch tiny training run.
- ``record_built_nets``: every network the train stage builds, with its weights as built.
- ``register_stand_in``: a training run with metrics and a stand-in model registered from it;
  ``write_training_output``: what train and evaluate leave for the register stage;
  ``promote_concurrently``: promotions of one alias racing each other from threads.
- ``running_team_server``: ``a2net server`` (PostgreSQL + ``mlflow server``) as a subprocess, its
  ``TeamServer`` (URL, database, folder, log), stopped with Ctrl-C; ``wait_for_line`` in a log.
- A tiny copy of this project in a temp git repo under real DVC (``project_copy``, ``TINY``,
  ``copy_project``, ``run_cmd``; the ``reproduced`` fixture runs it once) and the DVC-remote round
  trip whatever the remote, a folder or an S3 bucket (``push_and_clone``, ``pull_and_check``).

The preprocess stage and the shard reader (they import torch) are imported inside
``run_stage`` and ``iter_shard_clips``, so that modules using neither collect as fast as before.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.core.config import load_config
from pipeline.data.video import encode_video

if TYPE_CHECKING:
    import torch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """End ``process``' group (started with ``start_new_session``): SIGTERM, SIGKILL after
    ``timeout_s`` (a process already gone is left be)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tree_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (compare two trees byte for byte)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def enter_project_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``root`` the cwd, with MLflow on a new SQLite store in ``root/mlflow``."""
    monkeypatch.chdir(root)
    # absolute: MLflow caches stores by URI, and other tests use the relative default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow/mlflow.db")
    (root / "mlflow").mkdir()


# ------------------------------------------------- a tiny Kinetics-layout root

ANNOTATIONS_HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"
CLASSES = ["abseiling", "air drumming", "zumba"]
FPS, SHORT_SIDE = 10, 32
# (split, label, youtube_id, source fps, frames, width, height, layout)
GOOD_CLIPS = [
    ("train", "abseiling", "aaaaaaaaaaa", 25, 12, 64, 48, "label"),
    ("train", "air drumming", "bbbbbbbbbbb", 30, 9, 48, 64, "underscore"),
    ("train", "zumba", "ccccccccccc", 12, 6, 80, 80, "flat"),
    ("train", "zumba", "ddddddddddd", 15, 8, 96, 54, "label"),
    ("validate", "abseiling", "eeeeeeeeeee", 20, 10, 66, 50, "label"),
    ("validate", "air drumming", "fffffffffff", 10, 4, 40, 72, "flat"),
]
# fault kind -> youtube_id; all in split train with label zumba
FAULTS = {
    "missing": "m-missing00",
    "corrupt": "x-corrupt00",
    "truncated": "x-truncated",
    "zero_byte": "x-zerobyte0",
    "text": "x-textfile0",
}


def clip_id(youtube_id: str, start: int = 0, end: int = 10) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def write_annotations(root: Path, classes: list[str], files: dict[str, str]) -> Path:
    """``root/classes.txt`` listing ``classes`` and ``root/annotations/<name>`` with the given texts."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for name, text in files.items():
        (root / "annotations" / name).write_text(text)
    return root


def source_frames(n: int, width: int, height: int, seed: int) -> np.ndarray:
    """Smooth moving gradients (JPEG/H.264 friendly), uint8 (N, H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3)
    return np.stack(
        [np.stack([(base[c] + 3 * x + 2 * y + 9 * t * (c + 1)) % 256 for c in range(3)], -1) for t in range(n)]
    ).astype(np.uint8)


def write_kinetics_root(root: Path, faults: bool = True, extra_train: int = 0) -> Path:
    """A Kinetics-layout root: classes.txt, annotations/{train,validate}.csv, videos/<split>/...

    The ``GOOD_CLIPS`` (and ``extra_train`` more abseiling train clips) in the three folder
    layouts, plus with ``faults`` the ``FAULTS`` clips: one missing, four unreadable files.
    """
    clips = list(GOOD_CLIPS) + [
        ("train", "abseiling", f"extra{k:06d}", 25, 10, 64, 48, "label") for k in range(extra_train)
    ]
    rows = {"train": [], "validate": []}
    for seed, (split, label, yid, fps, n, w, h, layout) in enumerate(clips):
        folder = root / "videos" / split
        folder = {"label": folder / label, "underscore": folder / label.replace(" ", "_"), "flat": folder}[layout]
        folder.mkdir(parents=True, exist_ok=True)
        encode_video(source_frames(n, w, h, seed), folder / f"{clip_id(yid)}.mp4", fps)
        rows[split].append((label, yid))
    if faults:
        folder = root / "videos" / "train" / "zumba"
        good = (root / "videos/train/abseiling" / f"{clip_id('aaaaaaaaaaa')}.mp4").read_bytes()
        (folder / f"{clip_id(FAULTS['corrupt'])}.mp4").write_bytes(
            good[:32] + np.random.default_rng(0).bytes(len(good))
        )
        (folder / f"{clip_id(FAULTS['truncated'])}.mp4").write_bytes(good[: len(good) // 2])
        (folder / f"{clip_id(FAULTS['zero_byte'])}.mp4").write_bytes(b"")
        (folder / f"{clip_id(FAULTS['text'])}.mp4").write_text("this is not a video\n")
        rows["train"] += [("zumba", yid) for yid in FAULTS.values()]
    return write_annotations(
        root,
        CLASSES,
        {
            f"{split}.csv": ANNOTATIONS_HEADER + "".join(f'"{label}",{yid},0,10,{split},0\n' for label, yid in entries)
            for split, entries in rows.items()
        },
    )


def run_stage(root: Path, shards_dir: Path, **overrides) -> dict:
    """The preprocess stage on ``root`` at ``FPS``/``SHORT_SIDE``, one worker, 2 clips per shard."""
    from pipeline.data.preprocessing import DecodeSettings, preprocess

    params = {
        **dict(
            classes_file=None,
            fps=FPS,
            short_side=SHORT_SIDE,
            jpeg_quality=90,
            workers=1,
            trim=False,
            samples_per_shard=2,
        ),
        **overrides,
    }
    classes_file, workers = params.pop("classes_file"), params.pop("workers")
    return preprocess(root, shards_dir, classes_file=classes_file, settings=DecodeSettings(**params), workers=workers)


def read_manifest(shards_dir: Path) -> dict[str, dict]:
    with open(shards_dir / "manifest.csv", newline="") as f:
        return {row["clip_id"]: row for row in csv.DictReader(f)}


# ------------------------------------------------- reading shards whole


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a shard: its key (clip_id), its JSON record and its JPEG frames in order."""

    key: str
    meta: dict
    jpegs: list[bytes]


def iter_shard_clips(path: Path) -> Iterator[ClipRecord]:
    """Every clip of a shard, in shard order, with all its JPEG frames (indexed by ``scan_shard``)."""
    from pipeline.data.shards import scan_shard

    entries = scan_shard(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for entry in entries:
            jpegs = [os.pread(fd, int(size), int(offset)) for offset, size in zip(entry.offsets, entry.sizes)]
            yield ClipRecord(entry.key, entry.meta, jpegs)
    finally:
        os.close(fd)


# ------------------------------------------------- the composed config of a tiny training run


def tiny_overrides(data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    """A 2-epoch tiny_a2 run on 4×32×32 clips, batch 4, with every output under ``out``.

    ``data`` is (dataset root, shards dir), as the ``training_data`` fixture gives it.
    """
    root, shards_dir = data
    return [
        f"data.root={root}",
        f"data.shards_dir={shards_dir}",
        "model.clip.num_frames=4",
        "model.clip.stride=1",
        "model.clip.crop_size=32",
        "train.epochs=2",
        "train.batch_size=4",
        "train.num_workers=0",
        "train.lr=0.1",
        f"train.out_dir={out / 'model'}",
        f"train.metrics_csv={out / 'train_metrics.csv'}",
        f"eval.metrics_file={out / 'metrics.json'}",
        f"eval.per_class_file={out / 'per_class.json'}",
        f"eval.plots_dir={out / 'plots'}",
        *extra,
    ]


def tiny_config(data: tuple[Path, Path], out: Path, *extra: str) -> DictConfig:
    """``tiny_overrides`` composed (no params.yaml: ``out/no-params.yaml`` does not exist)."""
    return load_config(tiny_overrides(data, out, *extra), params_file=out / "no-params.yaml")


def train_config(cfg: DictConfig) -> Path:
    """``train()`` on a config's typed settings, as the train stage calls it; the checkpoint path."""
    from pipeline.settings import train_settings
    from pipeline.training.fit import train

    return train(train_settings(cfg))


def config_loaders(cfg: DictConfig, info, device: torch.device):
    """The training's loaders (``pipeline.training.loaders.training_data``) of a config."""
    from pipeline.settings import train_settings
    from pipeline.training.loaders import training_data

    return training_data(train_settings(cfg), info, device)


def config_model_input(cfg: DictConfig):
    """What the trainer feeds a config's network: ``ModelInput`` of its frames and memory format."""
    from pipeline.settings import train_settings

    settings = train_settings(cfg)
    return settings.model.model_input(settings.channels_last)


@dataclass(frozen=True)
class BuiltNet:
    """A network the train stage built and a copy of its weights before the first step."""

    net: torch.nn.Module
    initial: dict[str, torch.Tensor]


def record_built_nets(
    monkeypatch: pytest.MonkeyPatch, on_build: Callable[[torch.nn.Module], object] | None = None
) -> list[BuiltNet]:
    """Record every network ``train()`` builds from now on (``on_build`` sees each one first, e.g.
    to hook it): what a test needs to compare a training's steps with their closed form."""
    import pipeline.training.fit as fit

    built: list[BuiltNet] = []
    build = fit.build_net

    def recording(*args, **kwargs):
        net = build(*args, **kwargs)
        if on_build is not None:
            on_build(net)
        built.append(BuiltNet(net, {k: v.detach().clone() for k, v in net.state_dict().items()}))
        return net

    monkeypatch.setattr(fit, "build_net", recording)
    return built


# ------------------------------------------------- the registry: stand-in versions, racing promotions


def register_stand_in(
    experiment_id: str,
    model_name: str,
    metrics: dict[str, float] | None = None,
    validation: str = "passed",
    net=None,
    git_commit: str = "c0ffee",
    setting=None,
):
    """Make a training run with ``metrics`` (default GOOD_METRICS) and register a stand-in model
    (or ``net``) from it, on the current tracking store, evaluated in ``setting`` (default
    STAND_IN_SETTING); returns the ``RegisteredModel``."""
    import mlflow

    from pipeline.evaluation.setting import EvalRecord
    from pipeline.registry.publish import Lineage, log_and_register

    from mlflow_server import CLASSES, GOOD_METRICS, PREPROCESSING, STAND_IN_SETTING, StandInNet

    metrics = GOOD_METRICS if metrics is None else metrics
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics(metrics)
    evaluation = EvalRecord(run.info.run_id, setting or STAND_IN_SETTING, "/stand-in/shards", metrics)
    return log_and_register(
        net or StandInNet(),
        run_id=run.info.run_id,
        model_name=model_name,
        architecture="stand_in",
        classes=CLASSES,
        preprocessing=PREPROCESSING,
        lineage=Lineage(git_commit=git_commit, config_md5="p" * 32, shards_md5="s" * 32, validation=validation),
        evaluation=evaluation,
    )


def write_training_output(cfg: DictConfig, classes: list[str], tags: dict[str, str] | None = None) -> tuple:
    """What train and evaluate leave for the register stage: ``train.out_dir/last.pt`` of a
    finished (untrained) ``cfg.model`` recording its run, ``run_id.txt`` naming that run (FINISHED,
    with the headline metrics and ``tags``), and the evaluation record scoring it; returns (the
    net, the run)."""
    from dataclasses import replace

    import mlflow
    from omegaconf import OmegaConf

    import a2model
    from pipeline.core.config import config_md5
    from pipeline.core.files import write_atomic
    from pipeline.evaluation.setting import EvalRecord, record_path
    from pipeline.runtime.checkpoint import Checkpoint
    from pipeline.settings import model_spec, schedule
    from pipeline.tracking.store import setup_mlflow

    from mlflow_server import GOOD_METRICS, STAND_IN_SETTING

    net = a2model.build_model(cfg.model.net.name, num_classes=len(classes)).eval()
    out_dir = Path(cfg.train.out_dir)
    out_dir.mkdir(parents=True)
    with mlflow.start_run(experiment_id=setup_mlflow(cfg.mlflow.experiment)) as run:
        mlflow.log_metrics(GOOD_METRICS)
        mlflow.set_tags(tags or {})
    checkpoint = Checkpoint(
        net.state_dict(),
        model_spec(cfg),
        schedule(cfg),
        config_md5(OmegaConf.to_container(cfg)),
        classes,
        epoch=cfg.train.epochs,
        mlflow_run_id=run.info.run_id,
    )
    checkpoint.save(out_dir / "last.pt")
    (out_dir / "run_id.txt").write_text(run.info.run_id + "\n")
    setting = replace(
        STAND_IN_SETTING,
        num_clips=cfg.eval.num_clips,
        num_crops=cfg.eval.num_crops,
        crop_size=cfg.model.clip.crop_size,
    )
    record = EvalRecord(run.info.run_id, setting, cfg.data.shards_dir, GOOD_METRICS)
    write_atomic(record_path(Path(cfg.eval.metrics_file)), record.to_json())
    return net, run


def promote_concurrently(name: str, versions: list[str], monkeypatch, lock_uri: str) -> list:
    """Promote ``versions`` to staging from parallel threads, each with its own client, with the
    gate slowed so that every thread reads the alias before any writes it (the race window)."""
    import threading
    import time

    from mlflow import MlflowClient

    from pipeline.registry import promotion as registry

    check = registry.check_gate
    monkeypatch.setattr(registry, "check_gate", lambda *a, **k: (time.sleep(0.5), check(*a, **k))[1])
    results: dict[str, object] = {}

    def one(version: str) -> None:
        try:
            with registry.promotion_lock(lock_uri):
                results[version] = registry.promote(
                    MlflowClient(), name, version, "staging", metric="video_top1", margin=0.5
                )
        except registry.PromotionRefused as refused:
            results[version] = refused

    threads = [threading.Thread(target=one, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[v] for v in versions]


def hostile_files(folder: Path, target: Path) -> dict[str, Path]:
    """Files whose bytes make a permissive ffmpeg read ``target`` (another file on the machine) or
    hold no video container at all: a DASH manifest, an ffconcat list, an HLS playlist, an SDP
    description, a PNG image."""
    from pipeline.data.video import ffmpeg_exe

    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        "dash.mpd": '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT2.5S"><Period><AdaptationSet mimeType="video/mp4"><Representation '
        f'id="1" bandwidth="1000"><BaseURL>{target}</BaseURL></Representation></AdaptationSet></Period></MPD>',
        "list.ffconcat": f"ffconcat version 1.0\nfile '{target}'\n",
        "playlist.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:2.5,\nfile://{target}\n#EXT-X-ENDLIST\n",
        "stream.sdp": "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n",
    }
    files = {name: folder / name for name in texts}
    for name, text in texts.items():
        files[name].write_text(text)
    files["image.png"] = folder / "image.png"
    command = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1"]
    subprocess.run([*command, "-y", str(files["image.png"])], check=True)
    return files


def lavfi_video(path: Path, source: str, *codec: str) -> Path:
    """A video of ffmpeg's lavfi ``source`` (e.g. ``testsrc=size=64x48:rate=25:duration=1``) at
    ``path``, its container from the suffix, encoded with the ``codec`` arguments."""
    from pipeline.data.video import ffmpeg_exe

    command = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", source, *codec, "-y", str(path)]
    subprocess.run(command, check=True)
    return path


# ------------------------------------------------- UCF-101 in its official layout

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "Basketball"]


def avi(path: Path, seconds: float = 1.5) -> Path:
    """A real xvid-style AVI: mpeg4 video, 64×48 at 25 fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return lavfi_video(path, f"testsrc=size=64x48:rate=25:duration={seconds}", "-c:v", "mpeg4", "-q:v", "5")


def ucf_tree(root: Path, classes: list[str] = UCF_CLASSES, absent: str = "Basketball") -> Path:
    """UCF-101's layout, split 1: per class, group g01 tests and g02 trains; ``absent``'s g01 video
    is listed but missing."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes, 1)))
    train, test = [], []
    for i, name in enumerate(classes, 1):
        for group, listing in (("g01", test), ("g02", train)):
            video = f"{name}/v_{name}_{group}_c01.avi"
            if not (name == absent and group == "g01"):
                avi(root / "UCF-101" / video)
            listing.append(f"{video} {i}" if listing is train else video)
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")  # the official files end lines in CRLF
    return root


# ------------------------------------------------- a team's tracking server: a2net server as a subprocess

A2NET = Path(sys.executable).with_name("a2net")


@dataclass(frozen=True)
class TeamServer:
    """A running ``a2net server``: its URL, its local PostgreSQL's port, its ``--folder``, its log."""

    url: str
    database_port: int
    folder: Path
    process: subprocess.Popen
    log: Path

    def database_uri(self, password: str | None = None) -> str:
        secret = password or (self.folder / "postgres/password").read_text().strip()
        return f"postgresql://mlflow:{secret}@127.0.0.1:{self.database_port}/mlflow"


def wait_for_line(log: Path, process: subprocess.Popen, pattern: str, timeout_s: float = 180) -> re.Match:
    """The first match of ``pattern`` in ``log`` once the running ``process`` has written it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        assert process.poll() is None, f"a2net server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    raise AssertionError(f"no {pattern!r} after {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_team_server(*args: str, env: Mapping[str, str] | None = None) -> Iterator[TeamServer]:
    """``a2net server --folder F --port P *args`` with ``env`` added to this environment, F a folder
    of its own (under /tmp, reachable by ``nobody``, whom PostgreSQL runs as when the tests run as
    root); Ctrl-C stops it after, and no process of it may outlive it."""
    folder = Path(tempfile.mkdtemp(prefix="a2nets-team-"))
    folder.chmod(0o755)
    log = folder / "a2net-server.log"
    port = free_port()
    command = [str(A2NET), "server", "--folder", str(folder / "server"), "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    try:
        found = wait_for_line(log, process, r"runs and registry in postgresql://mlflow:\*\*\*@127\.0\.0\.1:(\d+)/")
        wait_for_line(log, process, r"clients: export MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+")
        yield TeamServer(f"http://127.0.0.1:{port}", int(found.group(1)), folder / "server", process, log)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0
        assert not _pids_running_in(folder), "a process of the server outlived a2net server"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def _pids_running_in(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the server's PostgreSQL, its MLflow)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if str(folder) in line and "ps -eo" not in line]


# ------------------------------------------------- a tiny copy of this project under real DVC

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
OUTPUT_FOLDERS = ("data/", "models/", "reports/")  # the pipeline's, committed ones included


def run_cmd(
    args: list[str], cwd: Path, expect: int = 0, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``args`` in ``cwd`` with this environment plus ``env``; asserts the exit status ``expect``."""
    full = dict(os.environ)
    full.pop("MLFLOW_TRACKING_URI", None)
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full['PATH']}"
    full.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="False")
    full.update(env or {})
    result = subprocess.run(args, cwd=cwd, env=full, text=True, capture_output=True, timeout=900)
    assert result.returncode == expect, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def copy_project(project: Path, dest: Path) -> Path:
    """``project`` (git repo, DVC cache, outputs, MLflow store) at ``dest``."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


def project_copy(dest: Path) -> Path:
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


def outputs(project: Path) -> list[str]:
    """Every output path of every stage in ``project``'s dvc.lock."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def content(path: Path) -> dict[str, str] | bytes:
    """A folder's file hashes, or a file's bytes."""
    return tree_hashes(path) if path.is_dir() else path.read_bytes()


@dataclass(frozen=True)
class RoundTrip:
    """A pushed project (``origin``) and a fresh git clone of it (``clone``), nothing pulled yet."""

    origin: Path
    clone: Path


def push_and_clone(reproduced: Path, tmp_path: Path, url: str, env: Mapping[str, str] | None = None) -> RoundTrip:
    """A copy of ``reproduced`` with the default DVC remote ``storage`` at ``url``, its results
    committed (dvc.lock, .dvc/config, the cache: false outputs) and pushed with ``env`` (the
    remote's credentials and endpoint, if any), and a fresh git clone of it."""
    origin = copy_project(reproduced, tmp_path / "origin")
    run_cmd(["dvc", "remote", "add", "-d", "storage", url], origin)
    run_cmd(["git", "add", "-A"], origin)
    run_cmd(["git", "commit", "-qm", "pipeline run"], origin)
    run_cmd(["dvc", "push"], origin, env=env)
    clone = tmp_path / "clone"
    run_cmd(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    return RoundTrip(origin, clone)


def pull_and_check(trip: RoundTrip, env: Mapping[str, str] | None = None) -> None:
    """``a2net pull`` (the default remote) in the clone, with ``env``: every output byte-identical
    to the origin's, and ``dvc repro`` there runs only the always-run toolchain check (its record is
    unchanged), leaving git clean."""
    run_cmd(["a2net", "pull"], trip.clone, env=env)
    pulled = outputs(trip.origin)
    assert {"data/synthetic", "data/shards", "models/train", "reports/metrics.json"} <= set(pulled)
    for out in pulled:
        assert content(trip.clone / out) == content(trip.origin / out), out
    again = run_cmd(["dvc", "repro"], trip.clone, env=env)
    assert re.findall(r"Running stage '(\w+)'", again.stdout) == ["toolchain"], again.stdout
    assert run_cmd(["git", "status", "--porcelain"], trip.clone).stdout == ""
