"""Local MLflow servers: serving a verified model (``a2net serve``), waiting for one to answer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.registry.predict import checked_mlmodel, model_folder, resolve_version


def serve_command(folder: Path, host: str, port: int) -> list[str]:
    """``mlflow models serve`` of the local model ``folder`` in this environment (one worker)."""
    mlflow = [sys.executable, "-m", "mlflow"]
    return [*mlflow, "models", "serve", "-m", str(folder), "--env-manager", "local", "-h", host, "-p", str(port)]


def serve_verified(model_uri: str, host: str, port: int) -> int:
    """Serve ``model_uri`` from a local copy whose code was checked (``checked_mlmodel``) first.

    The copy is the one served, so the code checked is the code that runs; it is removed when
    the server stops. The server runs in its own process group: Ctrl-C or SIGTERM to this
    process stops all of it (MLflow's uvicorn child included). Returns the server's exit
    status, 0 when stopped by a signal.
    """
    pinned, version = resolve_version(model_uri)
    with model_folder(pinned, shown=model_uri) as folder:
        checked_mlmodel(folder, model_uri)
        which = f"{model_uri} (version {version})" if version and not model_uri.endswith(f"/{version}") else model_uri
        print(f"serving {which} on http://{host}:{port}/invocations; its code is this checkout's", flush=True)
        process = subprocess.Popen(serve_command(folder, host, port), start_new_session=True)
        # Own handlers even where SIGINT was inherited as ignored (a background job of a script).
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop_group(process)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM ``process``'s process group (its own session), SIGKILL what outlives ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``url/health`` answers 200; RuntimeError if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"no answer from {url}/health after {timeout} s")
