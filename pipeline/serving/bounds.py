"""What one request to the served model may cost, and the slots that bound decodes at once.

``ServingBounds`` is the served model's ``model_config``: written by the register stage from
``register.serving`` (docs/registry.md#serving, sizes in MiB there and in bytes here), read by
the pyfunc at load (``mlflow.pyfunc.load_model(..., model_config=...)`` overrides it) and by
``a2net serve``'s request guard. Every refusal names the ``register.serving`` key it passed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.data.video import DecodeBudget

# register.serving key of each DecodeBudget field, named in the row's error
BUDGET_KEYS = {
    "max_frame_pixels": "max_frame_pixels",
    "max_source_frames": "max_source_frames",
    "cpu_seconds": "decode_cpu_seconds",
    "deadline": "request_seconds",
}
MIB = 2**20


@dataclass(frozen=True)
class ServingBounds:
    """Per-request bounds of the served model (see docs/registry.md#serving for each)."""

    max_rows: int = 32  # videos per request; more is an HTTP 400
    max_video_bytes: int = 32 * MIB  # bytes of one decoded row
    max_seconds: float = 60.0  # video per row, at the model's fps
    max_frame_pixels: int = 3840 * 2160  # width x height of a source frame (4K UHD)
    max_source_frames: int = 7200  # declared source frames per row (60 s at 120 fps)
    decode_cpu_seconds: int = 20  # CPU seconds one row's ffmpeg may spend
    request_seconds: float = 50.0  # wall clock per request; below MLflow's 60 s timeout
    concurrent_decodes: int = 2  # ffmpeg decodes at once on this machine (all server processes)
    max_request_bytes: int = 64 * MIB  # body of one request (``a2net serve``; a proxy otherwise)

    @classmethod
    def from_register(cls, serving: Mapping[str, Any]) -> ServingBounds:
        """From ``register.serving`` (``*_mb`` keys in MiB); keys it leaves out keep their defaults."""
        values = {}
        for key, value in serving.items():
            if key.endswith("_mb"):
                key, value = key.removesuffix("_mb") + "_bytes", int(value * MIB)
            values[key] = value
        return cls.from_config(values)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> ServingBounds:
        """From a model's ``model_config``; an older model's missing keys keep their defaults."""
        casts = {field.name: {"int": int, "float": float}[field.type] for field in fields(cls)}
        return cls(**{key: casts[key](value) for key, value in (config or {}).items() if key in casts})

    def model_config(self) -> dict[str, Any]:
        return asdict(self)

    def decode_budget(self, deadline: float) -> DecodeBudget:
        """The budget of one row's decode in a request that must end by ``deadline``."""
        return DecodeBudget(self.max_frame_pixels, self.max_source_frames, self.decode_cpu_seconds, deadline)


def slots_folder() -> Path:
    """Where this user's decode slots live: one flock'd file per slot, shared by server processes."""
    folder = Path(tempfile.gettempdir()) / f"a2net-decode-slots-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


@contextlib.contextmanager
def decode_slot(slots: int, deadline: float, folder: Path | None = None) -> Iterator[None]:
    """Hold one of ``slots`` decode slots (a file lock, freed even when the process dies).

    Raises TimeoutError when none frees up before ``deadline`` (``time.monotonic``).
    """
    folder = folder or slots_folder()
    while True:
        for index in range(slots):
            fd = os.open(folder / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield
            finally:
                os.close(fd)  # and with it the lock
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"all {slots} decode slots stayed busy")
        time.sleep(0.02)
