"""What the A² blocks of a model look at in one video: the central view's maps, a figure, arrays.

The central view is the middle clip's centre crop of the multi-view test. For each A² block
(``a2model.explain``) its n gather maps are ranked by *share*, the mean distribution weight the
positions give them (the shares of a block sum to 1); the top ``k`` are drawn as heat maps over
the view's frames, nearest in time and bilinear in space from the block's (T', H', W') grid.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from a2model.explain import AttentionMaps, attention_maps
from pipeline.core.files import atomic_path, write_atomic
from pipeline.data.transforms import normalize

TOP_MAPS = 4  # gather maps drawn per block


@dataclass(frozen=True)
class ViewAttention:
    """One view and the maps of every A² block on it (batch of one)."""

    frames: torch.Tensor  # uint8 (C, T, S, S): the view as the net sees it, before normalisation
    maps: list[AttentionMaps]  # gather and distribution (1, n, T', H', W') per block
    probabilities: torch.Tensor  # (K,) softmax of the net on this view


def central_view(views: torch.Tensor, num_crops: int) -> torch.Tensor:
    """The middle clip's centre crop of clip-major views (V, C, T, S, S), V = clips × crops."""
    num_clips = views.shape[0] // num_crops
    return views[(num_clips // 2) * num_crops + num_crops // 2]


@torch.no_grad()
def view_attention(
    net: torch.nn.Module, view: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> ViewAttention:
    """The maps of ``net``'s A² blocks on ``view`` (uint8 (C, T, S, S)); ValueError without any."""
    inputs = normalize(view[None], mean, std)
    maps = attention_maps(net, inputs)
    return ViewAttention(view, maps, net(inputs).softmax(1)[0])


def map_shares(maps: AttentionMaps) -> torch.Tensor:
    """(n,) mean distribution weight of each gather map over the positions; sums to 1."""
    return maps.distribution[0].flatten(1).mean(1)


def top_maps(maps: AttentionMaps, k: int = TOP_MAPS) -> list[tuple[int, float]]:
    """``(map index, share)`` of the ``k`` most used gather maps, most used first."""
    shares = map_shares(maps)
    top = shares.topk(min(k, shares.numel()))
    return list(zip(top.indices.tolist(), top.values.tolist()))


def heat_over_frames(gather: torch.Tensor, size: int, num_frames: int) -> torch.Tensor:
    """One gather map (T', H', W') as (T, S, S), scaled to [0, 1] by its maximum."""
    spatial = F.interpolate(gather[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    in_time = spatial[torch.arange(num_frames) * gather.shape[0] // num_frames]
    return in_time / in_time.max().clamp(min=1e-12)


def save_arrays(attention: ViewAttention, path: Path) -> Path:
    """``attention.npz``: per block ``gather_maps/<block>`` and ``distribution/<block>``, each
    (n, T', H', W'), the ``frames`` (T, S, S, 3) uint8 and the ``blocks`` in forward order."""
    arrays = {
        "frames": attention.frames.permute(1, 2, 3, 0).numpy(),
        "blocks": np.array([m.block for m in attention.maps]),
    }
    for maps in attention.maps:
        arrays[f"gather_maps/{maps.block}"] = maps.gather[0].numpy()
        arrays[f"distribution/{maps.block}"] = maps.distribution[0].numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
    return path


def plot_attention(attention: ViewAttention, path: Path, title: str, k: int = TOP_MAPS) -> Path:
    """A PNG: the view's frames, then per block its top ``k`` gather maps as heat maps over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = attention.frames.permute(1, 2, 3, 0).numpy()  # (T, S, S, 3)
    num_frames, size = frames.shape[0], frames.shape[1]
    rows = [("frames", None)] + [(maps, index) for maps in attention.maps for index in top_maps(maps, k)]
    fig, axes = plt.subplots(
        len(rows), num_frames, figsize=(1.3 * num_frames + 1.6, 1.3 * len(rows) + 0.6), squeeze=False
    )
    for row, (maps, top) in zip(axes, rows):
        heat = None if top is None else heat_over_frames(maps.gather[0, top[0]], size, num_frames).numpy()
        for t, ax in enumerate(row):
            ax.imshow(frames[t])
            if heat is not None:
                ax.imshow(heat[t], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        label = "frames" if top is None else f"{maps.block}\nmap {top[0]} · share {top[1]:.1%}"
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.04, hspace=0.08)
    scale = plt.cm.ScalarMappable(cmap="inferno", norm=plt.Normalize(0, 1))
    bar = fig.colorbar(scale, ax=axes[1:].ravel().tolist() or axes.ravel().tolist(), fraction=0.02, pad=0.01)
    bar.set_label("gather weight / the map's largest", fontsize=8)
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
