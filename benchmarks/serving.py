"""Requests/s and latency of the served model (``mlflow models serve``) against ``a2net predict``.

Serves the version the register stage last wrote (``reports/registered_model.json``) from the
project's store with ``mlflow models serve --env-manager local`` (one worker, 127.0.0.1, started
in a temporary folder), then times requests of one video and of a batch of 8 (base64, the
``video`` column), each after a warm-up request. The baseline, measured in the same run, is the
same model and videos in process: ``load_model`` + ``predict``, what ``a2net predict`` does
after its start-up. The videos are the first validation videos of the synthetic set.

    python benchmarks/serving.py [--requests 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ui_footprint import free_port, stop

from pipeline.registry.predict import load_model, predict
from pipeline.registry.server import wait_healthy
from pipeline.tracking.store import existing_tracking_uri

REPO = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).with_name("mlflow")


def post(url: str, payload: bytes) -> float:
    """Seconds one ``/invocations`` request takes; raises unless every row was answered."""
    request = urllib.request.Request(f"{url}/invocations", payload, {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    elapsed = time.perf_counter() - start
    assert all(row["error"] is None for row in answer["predictions"]), answer
    return elapsed


def payload(videos: list[Path]) -> bytes:
    rows = [[base64.b64encode(v.read_bytes()).decode()] for v in videos]
    return json.dumps({"dataframe_split": {"columns": ["video"], "data": rows}}).encode()


def timed(call, repeats: int) -> list[float]:
    call()  # warm-up
    return [call() for _ in range(repeats)]


def in_process(model, videos: list[Path]) -> float:
    start = time.perf_counter()
    predict(model, videos)
    return time.perf_counter() - start


def row(name: str, videos: int, times: list[float], baseline: list[float]) -> str:
    median, base = statistics.median(times), statistics.median(baseline)
    p90 = sorted(times)[int(0.9 * (len(times) - 1))]
    return (
        f"| {name} | {videos} | {1 / median:.2f} | {videos / median:.2f} | {1000 * median:.0f} | {1000 * p90:.0f} "
        f"| {1000 * base:.0f} | {median / base:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="timed requests per setting")
    args = parser.parse_args()
    os.chdir(REPO)
    os.environ["MLFLOW_TRACKING_URI"] = existing_tracking_uri()
    uri = json.loads(Path("reports/registered_model.json").read_text())["model_uri"]
    videos = sorted(Path("data/synthetic/videos/validate").rglob("*.mp4"))[:8]
    model = load_model(uri)
    batches = {"1 video": videos[:1], "batch of 8": videos}
    baselines = {name: timed(lambda v=v: in_process(model, v), args.requests) for name, v in batches.items()}
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        port = free_port()
        command = [
            str(MLFLOW),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        log = (Path(tmp) / "serve.log").open("wb")
        process = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process, timeout=180)
            bodies = {name: payload(v) for name, v in batches.items()}
            served = {name: timed(lambda b=body: post(url, b), args.requests) for name, body in bodies.items()}
        finally:
            stop(process)
            log.close()
    print(f"\n{uri}, {args.requests} timed requests each (medians; p90 of the served latency)\n")
    print("| request | videos | requests/s | videos/s | latency ms | p90 ms | in process ms | served / in process |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in batches.items():
        print(row(name, len(v), served[name], baselines[name]))


if __name__ == "__main__":
    main()
