"""Waiting for a local MLflow server (``mlflow ui``/``server``/``models serve``) to answer."""

from __future__ import annotations

import subprocess
import time
import urllib.request


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
