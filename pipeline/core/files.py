"""Writing files so that a reader never sees half of one: a temp name beside it, then a rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temp file ``path`` is written as before its rename: ``<path>.tmp``."""
    return path.with_name(path.name + TMP_SUFFIX)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the temp path to write ``path`` as; rename it into place when the block succeeds.

    The parent folder is created; on any failure the temp file is removed and ``path`` is left
    as it was, so a killed or failed writer never leaves half a file under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
