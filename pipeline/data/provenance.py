"""What decides the data stages' bytes besides code and params: the versions of the tools.

``toolchain`` names the builds that make the bytes (the ffmpeg binary, the libjpeg-turbo inside
simplejpeg, numpy); the toolchain stage writes it for DVC to track, preprocess records it in the
shards' ``provenance.json``, and training runs and registered models carry it as tags.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from pipeline.data.layout import MANIFEST_FILE, PROVENANCE_FILE
from pipeline.data.shard_store import ShardsLocation, open_store
from pipeline.data.video import ffmpeg_version, ffmpeg_version_text

TOOLCHAIN_TAG = "toolchain."  # prefix of the MLflow run and model-version tags naming it
_LIBJPEG_TURBO = re.compile(rb"libjpeg-turbo version ([0-9][0-9A-Za-z.]*)")


@functools.cache
def libjpeg_turbo_version() -> str:
    """Version of the libjpeg-turbo built into simplejpeg (read from its extension module)."""
    from simplejpeg import _jpeg

    found = _LIBJPEG_TURBO.search(Path(_jpeg.__file__).read_bytes())
    return found.group(1).decode() if found else "unknown"


def toolchain(ffmpeg_setting: str) -> dict[str, str]:
    """The versions that decide the data stages' bytes; no paths, so equal on every machine."""
    import numpy
    import simplejpeg

    return {
        "ffmpeg": ffmpeg_version(ffmpeg_setting),
        "ffmpeg_build_md5": hashlib.md5(ffmpeg_version_text(ffmpeg_setting).encode()).hexdigest(),
        "libjpeg_turbo": libjpeg_turbo_version(),
        "simplejpeg": simplejpeg.__version__,
        "numpy": numpy.__version__,
    }


def shards_toolchain(shards_dir: ShardsLocation) -> dict[str, str]:
    """The toolchain recorded in ``<shards_dir>/provenance.json``; empty when there is none."""
    try:
        return dict(json.loads(open_store(shards_dir).read_bytes(PROVENANCE_FILE) or b"")["toolchain"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def data_fingerprint(shards_dir: ShardsLocation) -> dict[str, str]:
    """Tags naming a training's data: manifest and shard-list hashes, dvc.lock's, the toolchain
    (a folder and its copy in an object store get the same, but dvc.lock's)."""
    store = open_store(shards_dir)
    manifest = store.read_bytes(MANIFEST_FILE)
    listing = "".join(f"{rel}\t{size}\n" for rel, size in store.tar_sizes().items())
    tags = {
        "data.manifest_md5": hashlib.md5(manifest).hexdigest() if manifest is not None else "missing",
        "data.shards_list_md5": hashlib.md5(listing.encode()).hexdigest(),
        **{f"{TOOLCHAIN_TAG}{tool}": version for tool, version in shards_toolchain(shards_dir).items()},
    }
    md5 = dvc_lock_md5(Path(shards_dir))
    if md5:
        tags["data.dvc_md5"] = md5
    return tags


def dvc_lock_md5(out_path: Path, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 ``dvc.lock`` records for the stage output ``out_path``; None when it records none."""
    if not lock.is_file():
        return None
    import yaml

    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if Path(out.get("path", "")) == Path(out_path) and "md5" in out:
                return str(out["md5"])
    return None
