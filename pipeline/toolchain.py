"""Toolchain stage: record the versions of the tools that decide the data stages' bytes.

``python -m pipeline.toolchain`` writes ``video.toolchain_file`` (default
``data/toolchain.json``): the ffmpeg that ``video.ffmpeg`` names (version and build hash),
libjpeg-turbo, simplejpeg and numpy. ``dvc.yaml`` runs it on every ``dvc repro``
(``always_changed``); ``generate`` and ``preprocess`` depend on its file, so they rerun exactly
when one of these versions changes (another ``video.ffmpeg``, another wheel) and never otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from pipeline.core.config import stage_main
from pipeline.core.files import write_atomic
from pipeline.data.provenance import toolchain


def run(cfg: DictConfig) -> None:
    """Write the toolchain of ``cfg.video.ffmpeg`` to ``cfg.video.toolchain_file``."""
    versions = toolchain(str(cfg.video.ffmpeg))
    write_atomic(Path(cfg.video.toolchain_file), json.dumps(versions, indent=2, sort_keys=True) + "\n")
    print(
        f"toolchain: {versions['ffmpeg']}, libjpeg-turbo {versions['libjpeg_turbo']}, "
        f"numpy {versions['numpy']} -> {cfg.video.toolchain_file}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
