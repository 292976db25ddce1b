"""The preprocess stage on a real Dask cluster (``data.executor=dask``): a ``dask scheduler`` and
two ``dask worker`` processes (no nanny, one thread each) started here in their own process
groups, in another working directory than the stage's, and stopped after the module.

The shards of a Dask run are the local run's byte for byte; so are those of a run whose worker
is SIGKILLed with clips in flight (its tasks rerun on the other worker) and those of a run killed
whole, then rerun (it resumes from the same ``.state/`` records as a local run). An unreachable
scheduler is one line, exit 2, with nothing written. The worker-kill test runs last: the module's
cluster has one worker after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core.errors import StageError
from pipeline.data.dask_executor import decode_clip, worker_build
from pipeline.data.frames import ClipJob
from pipeline.data.kinetics import load_classes, read_annotations
from pipeline.preprocess import main

from helpers import FPS, SHORT_SIDE, free_port, read_manifest, run_stage, stop_group, tree_hashes, write_kinetics_root

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]
DASK = Path(sys.executable).with_name("dask")
REPO = Path(__file__).resolve().parents[1]
SAMPLES_PER_SHARD = 1  # many small shards: a run is killed after its second, with most clips to go


@dataclass
class Cluster:
    """The module's cluster: its address, a client of it for the tests and its worker processes."""

    address: str
    client: object  # distributed.Client
    workers: dict[str, subprocess.Popen]  # by worker name

    def worker_address(self, name: str) -> str:
        infos = self.client.scheduler_info()["workers"]
        return next(address for address, info in infos.items() if info["name"] == name)


def start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from distributed import Client

    cwd = tmp_path_factory.mktemp("dask")  # not the stage's cwd: the jobs must carry absolute paths
    port = str(free_port())
    address = f"tcp://127.0.0.1:{port}"
    processes = [
        start(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            cwd / "scheduler.log",
            cwd,
        )
    ]
    workers = {
        name: start(
            [
                str(DASK),
                "worker",
                address,
                "--name",
                name,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--local-directory",
                str(cwd),
            ],
            cwd / f"{name}.log",
            cwd,
        )
        for name in ("w0", "w1")
    }
    processes += workers.values()
    try:
        with Client(address, timeout=120, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
            yield Cluster(address, client, workers)
    finally:
        for process in reversed(processes):
            stop_group(process)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, the local run's shards): 19 clips, 5 of them missing or unreadable."""
    tmp = tmp_path_factory.mktemp("dask-data")
    root = write_kinetics_root(tmp / "root", extra_train=8)
    run_stage(root, tmp / "local", samples_per_shard=SAMPLES_PER_SHARD)
    return root, tmp / "local"


def stage_args(root: Path, out: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"data.shards_dir={out}",
        f"data.fps={FPS}",
        f"data.short_side={SHORT_SIDE}",
        f"data.samples_per_shard={SAMPLES_PER_SHARD}",
    ]


def kept_shards(stdout: str) -> int:
    """The ``kept N finished shards`` of the stage's summary line."""
    return int(stdout.split("kept ")[1].split()[0])


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.002)


def test_a_dask_run_spreads_the_clips_over_the_workers_and_writes_the_local_bytes(
    cluster, data, tmp_path, monkeypatch, capsys
) -> None:
    from distributed import get_task_stream

    root, local = data
    monkeypatch.chdir(root.parent)  # a relative data.root: the workers' cwd is another
    out = tmp_path / "shards"
    with get_task_stream(client=cluster.client) as tasks:
        assert main([*stage_args(Path(root.name), out), "data.executor=dask", f"data.scheduler={cluster.address}"]) == 0
    assert tree_hashes(out) == tree_hashes(local)
    assert "decoded 19 clips" in capsys.readouterr().out
    assert {task["worker"] for task in tasks.data} == {cluster.worker_address(name) for name in ("w0", "w1")}


def test_a_worker_of_another_build_is_refused_in_one_line(cluster, data) -> None:
    root, _ = data
    annotation = read_annotations(root, load_classes(root / "classes.txt"))[0]
    job = ClipJob(annotation, None, FPS, SHORT_SIDE, 90, False)
    build = {**worker_build(job.ffmpeg_setting), "decoding_code_md5": "another checkout"}
    with pytest.raises(StageError, match=r"^Dask worker tcp://\S+ has another decoding_code_md5 than this run; "):
        cluster.client.submit(decode_clip, job, build, pure=False).result(timeout=120)
    same = cluster.client.submit(decode_clip, job, worker_build(job.ffmpeg_setting), pure=False)
    assert same.result(timeout=120).status == "missing"  # its own build: the clip is decoded (here: has no video)


def test_a_dask_run_killed_whole_resumes_from_its_finished_shards(cluster, data, tmp_path, capsys) -> None:
    root, local = data
    out = tmp_path / "shards"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.preprocess", *stage_args(root, out), "data.executor=dask"],
        env={**os.environ, "DASK_SCHEDULER_ADDRESS": cluster.address},  # data.scheduler's fallback
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    second = out / "train" / "train-000001.tar"  # once it exists, shard 0 and its state are finished
    try:
        wait_for(lambda: second.exists() or process.poll() is not None, "second shard")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert second.exists() and not (out / "manifest.csv").exists(), "the run ended before it was killed"

    assert main([*stage_args(root, out), "data.executor=dask", f"data.scheduler={cluster.address}"]) == 0
    assert kept_shards(capsys.readouterr().out) >= 1
    assert tree_hashes(out) == tree_hashes(local)


def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(data, tmp_path) -> None:
    root, local = data
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    before = tree_hashes(local)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.preprocess",
            *stage_args(root, local),
            "data.executor=dask",
            f"data.scheduler={address}",
        ],
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr  # no traceback, no log line
    assert run.stderr.startswith(f"error: cannot reach the Dask scheduler at {address} ")
    assert "data.executor=local" in run.stderr
    assert tree_hashes(local) == before and read_manifest(local)  # the earlier run's output untouched


@pytest.mark.parametrize(
    ("overrides", "env", "says"),
    [
        (["data.executor=dask"], {}, "data.executor=dask needs the scheduler's address: set data.scheduler="),
        (["data.executor=dask"], {"DASK_SCHEDULER_ADDRESS": "scheduler"}, "DASK_SCHEDULER_ADDRESS='scheduler' is not"),
        (["data.executor=ray"], {}, "data.executor='ray' is not valid: set it to one of local, dask"),
        (["data.executor=dask", "data.scheduler=8786"], {}, "data.scheduler=8786 is not valid: set it to null or a "),
    ],
    ids=["no-address", "bad-env-address", "other-executor", "bad-address"],
)
def test_a_bad_executor_setting_is_one_line(data, tmp_path, monkeypatch, capsys, overrides, env, says) -> None:
    root, _ = data
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*stage_args(root, tmp_path / "shards"), *overrides]) == 2
    assert capsys.readouterr().err.startswith(f"error: {says}")
    assert not (tmp_path / "shards").exists()


def test_a_worker_killed_with_clips_in_flight_leaves_them_to_the_other_and_the_same_bytes(
    cluster, data, tmp_path, capsys
) -> None:
    """Worker w1 is frozen (SIGSTOP) before the run, so the clips the scheduler gives it stay in
    flight until it is SIGKILLed: the run can only end by rerunning them on w0."""
    root, local = data
    victim, victim_address = cluster.workers["w1"], cluster.worker_address("w1")
    out = tmp_path / "shards"
    exit_code: list[int] = []
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        run = threading.Thread(
            target=lambda: exit_code.append(
                main([*stage_args(root, out), "data.executor=dask", f"data.scheduler={cluster.address}"])
            ),
            daemon=True,
        )
        run.start()
        wait_for(lambda: bool(cluster.client.processing(workers=[victim_address])[victim_address]), "clip on w1")
        in_flight = cluster.client.processing(workers=[victim_address])[victim_address]
        assert run.is_alive() and all(str(key).startswith("decode_clip-") for key in in_flight)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    run.join(timeout=300)
    assert exit_code == [0]
    assert "decoded 19 clips" in capsys.readouterr().out
    assert tree_hashes(out) == tree_hashes(local)
    assert victim_address not in cluster.client.scheduler_info()["workers"]
