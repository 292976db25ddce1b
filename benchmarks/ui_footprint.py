"""What ``a2net ui`` costs in processes and memory, against ``mlflow ui`` with MLflow's defaults.

``a2net ui`` runs ``mlflow ui`` with one worker and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``
(``pipeline.cli.ui_command`` / ``pipeline.registry.server.ui_env``); MLflow's defaults are 4 uvicorn workers plus a job
runner (huey consumers for GenAI evaluation jobs), which a local UI over the project's store does
not use. Each setting is started on a free port over a fresh SQLite store in a temporary folder
(no project data needed), one after the other; once ``/health`` answers and the process tree has
stopped growing, its processes are counted (children from ``/proc/<pid>/task/*/children``) and
their memory summed: RSS (``VmRSS``; counts pages that forked workers share once per process)
and PSS (``smaps_rollup``; shared pages split between their users, so it sums to real use).
Then the tree is terminated (SIGTERM to its process group, SIGKILL to what is left) and the
job runner's temporary folder in /dev/shm, which MLflow does not remove, is deleted.

    python benchmarks/ui_footprint.py [--settle 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import ui_command
from pipeline.registry.server import UI_ENV, ui_env, wait_healthy

HUEY_DIR_VAR = "_MLFLOW_HUEY_STORAGE_PATH"  # mlflow.server.constants: the job runner's storage folder


@dataclass(frozen=True)
class Footprint:
    """One setting's process tree once it has settled."""

    processes: int
    rss_mb: float
    pss_mb: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are still alive."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in children.read_text().split()]
            except OSError:
                continue  # the task ended meanwhile
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def _kb(path: Path, field: str) -> int:
    """A ``field:   N kB`` line of a /proc file, in kB (0 when the process or field is gone)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def footprint(pid: int) -> Footprint:
    """Process count, summed RSS and summed PSS of ``pid``'s tree."""
    pids = tree(pid)
    rss = sum(_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
    pss = sum(_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids)
    return Footprint(len(pids), rss / 1024, pss / 1024)


def settled(pid: int, settle: float, timeout: float) -> Footprint:
    """The tree's footprint once its process count has not changed for ``settle`` seconds."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = footprint(pid)
        if last is None or now.processes != last.processes:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
        time.sleep(0.5)
    return footprint(pid)


def huey_dirs(pids: list[int]) -> set[str]:
    """The job runner storage folders named in the environments of ``pids``."""
    found = set()
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        found |= {e.split(b"=", 1)[1].decode() for e in environ if e.startswith(HUEY_DIR_VAR.encode() + b"=")}
    return found


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's whole tree (its own session), then remove the job runner's folder."""
    pids = tree(process.pid)
    leftovers = huey_dirs(pids)
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:  # a child that left the group or ignored SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)


def measure(command: list[str], env: dict[str, str], folder: Path, settle: float, timeout: float) -> Footprint:
    """Start ``command`` in ``folder``, wait for health and a settled tree, measure, stop it."""
    port = command[command.index("--port") + 1]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout)
        return settled(process.pid, settle, timeout)
    finally:
        stop(process)
        log.close()


def settings(root: Path) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """name: (command, environment, working folder), each over its own fresh SQLite store."""
    plain_env = {k: v for k, v in os.environ.items() if k not in UI_ENV}  # MLflow's defaults
    out = {}
    for name in ("a2net ui", "mlflow ui defaults"):
        folder = root / name.replace(" ", "_")
        folder.mkdir()
        command = ui_command(free_port(), f"sqlite:///{folder / 'mlflow.db'}")
        if name == "a2net ui":
            out[name] = (command, ui_env(plain_env), folder)
        else:
            workers = command.index("--workers")
            out[name] = (command[:workers] + command[workers + 2 :], plain_env, folder)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds the process count must hold still")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /health and settling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-footprint-") as tmp:
        results = {}
        for name, (command, env, folder) in settings(Path(tmp)).items():
            print(f"{name}: {' '.join(command[1:])}", flush=True)
            results[name] = measure(command, env, folder, args.settle, args.timeout)
    project, baseline = results["a2net ui"], results["mlflow ui defaults"]
    print("\n| setting | processes | RSS total (MB) | PSS total (MB) |")
    print("|---|---:|---:|---:|")
    print(f"| a2net ui (1 worker, no job runner) | {project.processes} | {project.rss_mb:.0f} | {project.pss_mb:.0f} |")
    print(
        f"| mlflow ui defaults (4 workers, job runner) | {baseline.processes} | {baseline.rss_mb:.0f} "
        f"| {baseline.pss_mb:.0f} |"
    )
    print(
        f"| ratio a2net ui / defaults | {project.processes / baseline.processes:.2f} "
        f"| {project.rss_mb / baseline.rss_mb:.2f} | {project.pss_mb / baseline.pss_mb:.2f} |"
    )


if __name__ == "__main__":
    main()
