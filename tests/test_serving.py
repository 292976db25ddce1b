"""The registered model as a service: a real ``mlflow models serve --env-manager local``, started
outside the project, answers base64 videos as ``a2net predict`` does; bad rows get an error each."""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest

from pipeline.data.video import CONTAINER_NAMES, ffmpeg_exe
from pipeline.registry.predict import load_model, predict
from pipeline.registry.server import wait_healthy
from pipeline.serving.package import SERVING_DISTRIBUTIONS, carried_files, entry_file, foreign_code

from helpers import free_port, hostile_files, stop_group
from mlflow_server import CLASSES, MLFLOW


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(url: str, rows: list[str], column: str = "video", **params) -> tuple[int, dict]:
    """POST ``rows`` as the ``column`` column to ``url/invocations``: (HTTP status, JSON answer)."""
    payload = {"dataframe_split": {"columns": [column], "data": [[row] for row in rows]}}
    if params:
        payload["params"] = params
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served(stand_in_store: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of ``mlflow models serve -m models:/a2net@staging`` run from a folder outside the project."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(MLFLOW), "models", "serve", "-m", "models:/a2net@staging", "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]
    log = (elsewhere / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        command, cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_healthy(url, process, timeout=120)
        yield url
    finally:
        stop_group(process)
        log.close()


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid media file without a video stream (one second of silence)."""
    path = tmp_path_factory.mktemp("audio") / "silence.m4a"
    subprocess.run(
        [ffmpeg_exe("wheel"), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "1", str(path)],
        check=True,
    )
    return path


def test_the_served_model_answers_what_a2net_predict_answers(served, stand_in_store, noise_video) -> None:
    status, answer = post(served, [b64(noise_video.read_bytes())] * 2)
    assert status == 200
    [expected] = predict(load_model("models:/a2net@staging"), [noise_video])
    for row in answer["predictions"]:
        assert row["error"] is None and row["labels"] == expected.labels
        assert row["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    status, answer = post(served, [b64(noise_video.read_bytes())], top_k=2)
    assert status == 200 and answer["predictions"][0]["labels"] == expected.labels[:2]


def test_bad_rows_get_an_error_each_and_good_rows_their_labels(served, noise_video, audio_only) -> None:
    rows = ["", "not base64 at all!", b64(b"this is not a video\n"), b64(audio_only.read_bytes())]
    status, answer = post(served, [*rows, b64(noise_video.read_bytes())])
    assert status == 200
    *bad, good = answer["predictions"]
    says = ["row 0: empty", "row 1: not base64", "row 2: not a readable video", "row 3: not a readable video"]
    for row, start in zip(bad, says):
        assert row["error"].startswith(start) and row["labels"] == [] and "/tmp" not in row["error"], row
    assert bad[3]["error"] == "row 3: not a readable video (no video stream)"
    assert good["error"] is None and len(good["labels"]) == 5


def test_too_many_rows_is_a_400_and_the_server_keeps_serving(served, noise_video) -> None:
    status, answer = post(served, [""] * 33)
    assert status == 400 and "33 videos in one request; send at most 32" in answer["message"]
    status, answer = post(served, [b64(noise_video.read_bytes())], column="clip")
    assert status == 400 and "video" in answer["message"]
    status, answer = post(served, [b64(noise_video.read_bytes())])
    assert status == 200 and answer["predictions"][0]["error"] is None


@pytest.mark.parametrize("top_k", [-1, 0, None])
def test_a_top_k_below_1_is_an_error_per_row_without_a_traceback(served, noise_video, top_k) -> None:
    status, answer = post(served, [b64(noise_video.read_bytes())] * 2, top_k=top_k)
    assert status == 200, answer
    says = f"params.top_k={str(top_k)!r} is not valid; give a whole number >= 1"
    assert [row["error"] for row in answer["predictions"]] == [f"row 0: {says}", f"row 1: {says}"]
    assert "Traceback" not in json.dumps(answer)


@pytest.mark.parametrize("top_k", [6, 7, 10**9])  # the stand-in knows 6 classes
def test_a_top_k_above_the_classes_gives_every_class(served, noise_video, top_k) -> None:
    status, answer = post(served, [b64(noise_video.read_bytes())], top_k=top_k)
    assert status == 200 and answer["predictions"][0]["error"] is None
    assert sorted(answer["predictions"][0]["labels"]) == sorted(CLASSES)


@pytest.mark.parametrize(
    "bound, says",
    [
        ({"max_seconds": 1.0}, "row 0: longer than 10 frames (1 s at 10 fps); give a clip of at most 1 s"),
        ({"max_video_bytes": 1000}, "row 0: over the 1000-byte limit per video"),
        (
            {"max_source_frames": 50},
            "row 0: 62 source frames (25 fps for 2.5 s), over the 50-frame limit (register.serving.max_source_frames)",
        ),
        (
            {"max_frame_pixels": 3000},
            "row 0: 64x48 frames, over the 3000-pixel limit (register.serving.max_frame_pixels)",
        ),
    ],
)
def test_a_row_over_a_bound_gets_an_error(stand_in_store, noise_video, bound, says) -> None:
    served = mlflow.pyfunc.load_model("models:/a2net@staging", model_config=bound)  # overrides register.serving
    [row] = served.predict(pd.DataFrame({"video": [b64(noise_video.read_bytes())]}))
    assert row["labels"] == [] and row["error"] == says, row


def test_a_request_ends_on_time_and_its_ffmpeg_with_it(stand_in_store, noise_video, fast_video) -> None:
    """request_seconds=1: the row decoding then is stopped (its ffmpeg killed), the rows after it
    are not started; each gets an error naming the bound, the request takes about 1 s."""
    bounds = {"request_seconds": 1.0, "max_source_frames": 10**6}  # the 100,000 frames pass the header check
    served = mlflow.pyfunc.load_model("models:/a2net@staging", model_config=bounds)
    started = time.monotonic()
    rows = served.predict(pd.DataFrame({"video": [b64(fast_video.read_bytes()), b64(noise_video.read_bytes())]}))
    assert time.monotonic() - started < 3
    assert [row["error"] for row in rows] == [
        "row 0: the request's time ran out while decoding it (register.serving.request_seconds)",
        "row 1: not decoded: the request's time ran out before this row (register.serving.request_seconds)",
    ]
    assert not [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


def test_rows_naming_server_files_and_decode_bombs_get_an_error_each(
    served, noise_video, fast_video, huge_frame, tmp_path
) -> None:
    """A DASH manifest, an ffconcat list and an HLS playlist naming a video on the server decode
    nothing of it (before: its labels, or its length); a PNG is no video; a 16000x16000 frame and
    100,000 frames are refused from their headers. The whole request is answered in seconds and the
    good row after them gets its labels."""
    hostile = hostile_files(tmp_path, noise_video)
    names = ["dash.mpd", "list.ffconcat", "playlist.m3u8", "image.png"]
    rows = [b64(hostile[name].read_bytes()) for name in names]
    rows += [b64(huge_frame.read_bytes()), b64(fast_video.read_bytes()), b64(noise_video.read_bytes())]
    started = time.monotonic()
    status, answer = post(served, rows)
    assert status == 200 and time.monotonic() - started < 10
    *refused, good = answer["predictions"]
    container = f"not a readable video (not in a video container read here ({CONTAINER_NAMES}))"
    assert [row["error"] for row in refused] == [f"row {i}: {container}" for i in range(4)] + [
        "row 4: 16000x16000 frames, over the 8294400-pixel limit (register.serving.max_frame_pixels)",
        "row 5: 100000 source frames (10000 fps for 10.0 s), over the 7200-frame limit "
        "(register.serving.max_source_frames)",
    ]
    assert good["error"] is None and len(good["labels"]) == 5


def test_the_model_runs_its_own_code_outside_the_project(stand_in_store, noise_video, tmp_path) -> None:
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/a2net@staging", dst_path=str(tmp_path)))
    script = (
        "import base64, sys, mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "import pipeline.serving.pyfunc as served\n"
        "video = base64.b64encode(open(sys.argv[2], 'rb').read()).decode()\n"
        "print(served.__file__, model.predict(pd.DataFrame({'video': [video]}))[0]['labels'][0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(noise_video)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    module_file, label = done.stdout.split()
    assert Path(module_file).is_relative_to(folder / "code")  # not this checkout's pipeline/
    [expected] = predict(load_model(str(folder)), [noise_video])
    assert label == expected.labels[0]


def test_a_freshly_registered_model_carries_exactly_the_register_stages_code(stand_in_store, tmp_path) -> None:
    import yaml

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/a2net@staging", dst_path=str(tmp_path)))
    assert foreign_code(yaml.safe_load((folder / "MLmodel").read_text()), folder) is None
    assert (folder / "entry.py").read_bytes() == entry_file().read_bytes()
    assert not list(folder.rglob("__init__.py"))  # namespace packages: the store never holds one
    assert "pipeline/serving/pyfunc.py" in carried_files() and "pipeline/data/video.py" in carried_files()


def _third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"pipeline", "__future__"}


def test_the_pip_requirements_cover_every_package_the_carried_code_imports() -> None:
    distributions = packages_distributions()
    provided = {name.lower() for name in SERVING_DISTRIBUTIONS} | {"mlflow"}  # MLflow adds itself
    for path in [entry_file(), *carried_files().values()]:
        for module in _third_party_imports(path):
            owners = {d.lower() for d in distributions.get(module, [module])}
            assert owners & provided, f"{path.name} imports {module} ({owners}), not in SERVING_DISTRIBUTIONS"


def test_the_package_inits_left_out_of_the_carried_code_hold_only_a_docstring() -> None:
    from pipeline.core.imports import import_closure

    for init in (p for p in import_closure("pipeline.serving.entry") if p.name == "__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init}: a namespace copy would lose its code"


def test_a2net_serve_serves_a_checked_copy_and_stops_all_of_it_on_ctrl_c(stand_in_store, noise_video, tmp_path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("a2net")), "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:  # a file, not a pipe: a leftover server could hold a pipe open forever
        process = subprocess.Popen(
            command, cwd=stand_in_store["root"], env={**os.environ, "TMPDIR": str(scratch)}, stdout=out, stderr=out
        )
    try:
        wait_healthy(url, process, timeout=120)
        status, answer = post(url, [b64(noise_video.read_bytes())])
        assert status == 200 and answer["predictions"][0]["error"] is None
        assert [p.name for p in scratch.iterdir() if p.name.startswith("a2net-model-")]  # the checked copy
        check_request_guard(port)
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C, even where the test runner ignores SIGINT
        try:
            process.wait(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, log.read_text()
    assert f"serving models:/a2net@staging (version {stand_in_store['version']}) on {url}" in log.read_text()
    assert not [p for p in scratch.iterdir() if p.name.startswith("a2net-model-")]
    with pytest.raises(urllib.error.URLError):  # the server (MLflow's uvicorn child included) is gone
        urllib.request.urlopen(f"{url}/health", timeout=5)


def raw_post(port: int, headers: str, chunks: Iterable[bytes] = ()) -> tuple[int, dict]:
    """POST to /invocations on a raw socket: ``headers``, then ``chunks`` until the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        head = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}{headers}\r\n".encode())
        with contextlib.suppress(OSError):  # the server may answer and close before the last chunk
            for chunk in chunks:
                sock.sendall(chunk)
        head, _, body = sock.makefile("rb").read().partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def check_request_guard(port: int) -> None:
    """a2net serve's guard: a declared body over max_request_mb is a 413 unread, a chunked one as
    soon as it passes the limit, JSON nested 100,000 deep a 400 (MLflow alone: a 500)."""
    limit = "over the 67108864-byte limit per request (register.serving.max_request_mb)"
    status, answer = raw_post(port, "Content-Length: 1000000000000\r\n")
    says = f"a body of 1000000000000 bytes, {limit}; send fewer or smaller videos per request"
    assert (status, answer["message"]) == (413, says)
    mib = b"%x\r\n" % 2**20 + b" " * 2**20 + b"\r\n"
    status, answer = raw_post(port, "Transfer-Encoding: chunked\r\n", [mib] * 80)
    assert status == 413 and answer["message"].startswith(f"a body of more than 67108864 bytes, {limit}")
    deep = b"[" * 100_000
    status, answer = raw_post(port, f"Content-Length: {len(deep)}\r\n", [deep])
    assert status == 400 and answer["message"].startswith("the request nests JSON deeper than 32 levels")


def test_a2net_serve_refuses_a_model_with_foreign_code_before_serving(stand_in_store, tmp_path, capsys) -> None:
    from pipeline.cli import main

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/a2net@staging", dst_path=str(tmp_path)))
    (folder / "code" / "sitecustomize.py").write_text("raise SystemExit('ran')\n")
    assert main(["serve", "--model", str(folder), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: model {folder} carries code that is not this checkout's (code/sitecustomize.py, which the "
        "register stage did not write); a2net runs no code from a model: register it with "
        "`python -m pipeline.register`\n"
    )


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in the README."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    after = text[text.index(heading) :]
    return after.split("```bash\n", 1)[1].split("```", 1)[0]


def test_the_readmes_serving_commands_work_as_pasted_from_another_folder(stand_in_store, noise_video, tmp_path) -> None:
    """The README's Serve block, run by bash in a folder outside the project (only its port changed, to a
    free one): it finds the project's store and a sample clip under folders with spaces and parentheses,
    starts the server, waits for it, gets predictions and stops it."""
    root = stand_in_store["root"]
    videos = root / "data/synthetic/videos/validate/different colours (hues 90+ degrees apart), moving up"
    videos.mkdir(parents=True)
    (videos / "-a1B2c3D4e5_000010_000014.mp4").write_bytes(noise_video.read_bytes())
    block = readme_block("**Serve.**")
    assert block.count("5001") == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env |= {"A2NETS": str(root), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
    process = subprocess.Popen(
        ["bash", "-c", block.replace("5001", str(free_port()))],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-2000:]
    answers = [line for line in out.splitlines() if line.startswith('{"predictions"')]  # the server logs here too
    assert len(answers) == 1, (out[-2000:], err[-2000:])
    [row] = json.loads(answers[0])["predictions"]
    assert row["error"] is None and len(row["labels"]) == 5 and set(row["labels"]) <= set(CLASSES)
