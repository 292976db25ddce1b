"""``a2net explain``: what a registered model's A² blocks look at in one video.

The registered pt2 program has no modules to hook, so the eager net is rebuilt by name from the
model's ``net`` metadata (``pipeline.runtime.net.net_from_values``: a factory name and plain
values, never code) and loaded with the program's own weights. The video is preprocessed as
``a2net predict`` does; the figure and arrays are ``pipeline.evaluation.attention``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import StageError
from pipeline.evaluation.attention import central_view, plot_attention, save_arrays, view_attention
from pipeline.registry.predict import LoadedModel
from pipeline.runtime.net import net_from_values
from pipeline.serving.views import video_frames


@dataclass(frozen=True)
class Explanation:
    """Where ``a2net explain`` wrote the figure and the arrays, and the view's top label."""

    figure: Path
    arrays: Path
    label: str
    probability: float


def eager_net(model: LoadedModel) -> torch.nn.Module:
    """The registered model as an eager module (hookable), with the exported program's weights."""
    net = net_from_values(model.net_config or {"name": model.architecture}, len(model.classes), model.uri)
    try:
        net.load_state_dict(dict(model.state_dict))
    except RuntimeError:
        raise StageError(f"model {model.uri}: its weights do not fit its net metadata; re-register it") from None
    return net.eval()


def writable_folder(path: Path) -> None:
    """Make ``path`` (a folder) if needed; a StageError naming it when it is a file or not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StageError(f"--out {path} is a file, not a folder; give a folder for attention.png and .npz") from None
    except OSError as err:
        raise StageError(f"--out {path}: {err.strerror}; give a folder you can write") from None
    if not os.access(path, os.W_OK):
        raise StageError(f"--out {path}: not writable; give a folder you can write")


def explain_video(model: LoadedModel, video: Path, out_dir: Path) -> Explanation:
    """Write ``out_dir/attention.png`` and ``out_dir/attention.npz`` for ``video``'s central view."""
    writable_folder(out_dir)  # before the work, not after it
    net = eager_net(model)
    prep = model.preprocessing
    view = central_view(video_frames(video, prep), prep.num_crops)
    try:
        attention = view_attention(net, view, prep.mean, prep.std)
    except ValueError as err:
        raise StageError(f"model {model.uri}: {err}") from None
    best = int(attention.probabilities.argmax())
    label, probability = model.classes[best], float(attention.probabilities[best])
    title = f"{video.name}, central view: {label} ({probability:.1%}) · {model.uri}"
    return Explanation(
        plot_attention(attention, out_dir / "attention.png", title),
        save_arrays(attention, out_dir / "attention.npz"),
        label,
        probability,
    )
