"""Attention figures of the evaluated model on a fixed choice of validation videos, one per class.

The first validation video of each class (shard order) is drawn, for the first
``max_classes`` classes that have one, as ``<class index>_<class>.png`` under ``out_dir``; where the
data records kinds (the synthetic set's spatial and temporal clips) the classes take them in turn,
so the figures show each kind
(``pipeline.evaluation.attention``): the central view of the same multi-view test the metrics
come from. A model without A² blocks gets none (an empty ``out_dir``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from a2model import DoubleAttention
from pipeline.data.shard_store import ShardsLocation
from pipeline.data.shards import ClipDataset
from pipeline.data.transforms import TestTransform, UniformClips
from pipeline.evaluation.attention import central_view, plot_attention, view_attention
from pipeline.runtime.checkpoint import TrainedNet


def first_per_class(labels: Sequence[int], max_classes: int, kinds: Sequence[str] = ()) -> dict[int, int]:
    """``{label: index of its first video}`` for the ``max_classes`` lowest labels present; with
    ``kinds`` (one per video), the r-th of those classes takes its first video of the r-th recorded
    kind in turn (its first video of any kind when it has none of that one)."""
    first: dict[tuple[int, str], int] = {}
    for index, (label, kind) in enumerate(zip(labels, kinds or [""] * len(labels), strict=True)):
        first.setdefault((label, ""), index)
        first.setdefault((label, kind), index)
    turns = sorted(set(kinds) - {""}) or [""]
    chosen = sorted({label for label, _ in first})[:max_classes]
    return {label: first.get((label, turns[r % len(turns)]), first[label, ""]) for r, label in enumerate(chosen)}


def figure_name(label: int, name: str) -> str:
    """``003_air_drumming.png``: sorts by class index, safe in any file system and URL."""
    return f"{label:03d}_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png"


def attention_examples(
    trained: TrainedNet,
    shards_dir: ShardsLocation,
    split: str,
    num_clips: int,
    num_crops: int,
    out_dir: Path,
    max_classes: int,
    crop_size: int | None = None,
) -> list[Path]:
    """Draw the examples into ``out_dir`` (its old figures removed); the paths written, [] without A².

    Drawn on CPU in fp32: the trained network is moved there (the evaluate stage's last use of it).
    """
    out_dir.mkdir(parents=True, exist_ok=True)  # a DVC out, even when it stays empty
    for stale in out_dir.glob("*.png"):
        stale.unlink()
    if not any(isinstance(m, DoubleAttention) for m in trained.net.modules()):
        return []
    net, clip, frames, classes = trained.net.cpu(), trained.model.clip, trained.model.frames, trained.classes
    dataset = ClipDataset(
        shards_dir,
        split,
        UniformClips(clip.num_frames, clip.stride, num_clips),
        TestTransform(crop_size or clip.crop_size, num_crops),
    )
    paths = []
    kinds = dataset.kinds
    for label, index in first_per_class(dataset.labels, max_classes, kinds).items():
        item = dataset[index]
        attention = view_attention(net, central_view(item["frames"], num_crops), frames.mean, frames.std)
        best = int(attention.probabilities.argmax())
        kind = f"{kinds[index]} clip, " if kinds[index] else ""
        title = (
            f"{classes[label]} ({kind}validation {item['key']}), central view: "
            f"predicted {classes[best]} ({float(attention.probabilities[best]):.1%})"
        )
        paths.append(plot_attention(attention, out_dir / figure_name(label, classes[label]), title))
    return paths
