"""Do the trained A² blocks' gather maps single out the two objects of the synthetic set, in
space (spatial clips: both on screen) and across time (temporal clips: one after the other)?

For every validation video of the synthetic set, the central view (middle clip, centre crop)
goes through the trained model (``train.out_dir/last.pt``) and, as a control, through the same
architecture untrained (seed 0). The generator's own object tracks (re-rendered from the clip's
seed: shape, radius, centre per source frame) give each view frame's object mask; it is mapped
through the pipeline's geometry (``data.fps`` resampling: nearest source frame; short side and
centre crop: the same scale and offset as ``TestTransform``) and averaged onto each block's
(T', H', W') grid, giving the object fraction of every position. Per block and video:

- object area: the mean object fraction of the positions (what a uniform map would put on objects);
- gather mass on objects: Σ_i share_i · Σ_p gather_i(p) · object(p), the object share of the
  global features the block hands out (share_i = mean distribution weight of map i);
- lift: mass / area; top map: the object mass of the map with the largest share; most
  object-centred map: the largest object mass of any of the block's n maps;
- on temporal clips, both objects: the share of the videos on which the top map puts at least a
  quarter of its object mass on each object (its frames of the first and of the second).

Each figure is given for spatial and temporal clips apart. A per-frame block's maps sum to 1 in
each frame: their mass is divided by the frame count, so that it is a share of the whole map too.

    python benchmarks/attention_objects.py
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F

import a2model
from pipeline.data.clips import uniform_clip_indices
from pipeline.data.shards import ClipDataset
from pipeline.data.synthetic import _shape_mask, clip_annotation, clip_rng, plan_jobs, render_clip  # the tracks' shapes
from pipeline.data.transforms import TestTransform, UniformClips
from pipeline.evaluation.attention import central_view, map_shares, view_attention
from pipeline.runtime.checkpoint import CHECKPOINT_FILE, Checkpoint

REPO = Path(__file__).resolve().parents[1]


def object_fraction(tracks, source_shape, source_fps, frames, fps, crop, grid) -> torch.Tensor:
    """(objects, T', H', W') fraction of each object in the central crop of shard frames ``frames``
    on ``grid``."""
    height, width = source_shape
    scale = crop / min(height, width)
    offset_x, offset_y = (width * scale - crop) / 2, (height * scale - crop) / 2
    centres = np.arange(crop) + 0.5
    x = (centres + offset_x) / scale - 0.5  # source pixel coordinates (as the generator draws)
    y = (centres + offset_y) / scale - 0.5
    ys, xs = np.meshgrid(y, x, indexing="ij")
    masks = np.zeros((len(tracks), len(frames), crop, crop), dtype=bool)
    for t, k in enumerate(frames):
        j = min(round(k * source_fps / fps), len(tracks[0].centres) - 1)
        for i, track in enumerate(tracks):
            cx, cy = track.centres[j]
            masks[i, t] = track.visible[j] & _shape_mask(track.shape, xs - cx, ys - cy, track.radius)
    volume = torch.from_numpy(masks).float()[None]  # (1, objects, T, S, S)
    return F.adaptive_avg_pool3d(volume, grid)[0]


def measure(net, dataset, clips, params) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per (block, kind): lists (one value per video) of area, mass, top-map and best-map mass, and
    whether the top map has >= 1/4 of its object mass on each object."""
    data, clip, num_crops = params["data"], params["model"]["clip"], params["eval"]["num_crops"]
    found: dict[tuple[str, str], dict[str, list[float]]] = {}
    for index, (tracks, shape, source_fps, kind) in clips.items():
        item = dataset[index]
        frames = uniform_clip_indices(
            dataset.num_frames[index], clip["num_frames"], clip["stride"], params["eval"]["num_clips"]
        )
        middle = frames[len(frames) // 2]
        view = central_view(item["frames"], num_crops)
        for maps in view_attention(net, view, data["mean"], data["std"]).maps:
            gather, shares = maps.gather[0], map_shares(maps)
            gather = gather / gather.flatten(1).sum(1).view(-1, *[1] * (gather.dim() - 1))  # per-frame: / T'
            each = object_fraction(tracks, shape, source_fps, middle, data["fps"], clip["crop_size"], gather.shape[1:])
            per_object = torch.einsum("n...,o...->no", gather, each)  # (n, objects)
            mass = per_object.sum(1)  # (n,)
            top = per_object[shares.argmax()]
            record = found.setdefault((maps.block, kind), {"area": [], "mass": [], "top": [], "best": [], "both": []})
            record["area"].append(float(each.sum(0).mean()))
            record["mass"].append(float((shares * mass).sum()))
            record["top"].append(float(top.sum()))
            record["best"].append(float(mass.max()))
            record["both"].append(float((top >= top.sum() / 4).all()))
    return found


def main() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    gen, data = params["generate"], params["data"]
    checkpoint_path = REPO / params["train"]["out_dir"] / CHECKPOINT_FILE
    checkpoint = Checkpoint.load(checkpoint_path)
    trained = checkpoint.build_net(checkpoint_path).eval()
    torch.manual_seed(0)
    untrained = a2model.build_model(checkpoint.model_name, num_classes=len(checkpoint.classes)).eval()
    clip = params["model"]["clip"]
    dataset = ClipDataset(
        REPO / data["shards_dir"],
        data["val_split"],
        UniformClips(clip["num_frames"], clip["stride"], params["eval"]["num_clips"]),
        TestTransform(clip["crop_size"], params["eval"]["num_crops"]),
    )
    position = {key: i for i, key in enumerate(dataset.keys)}
    jobs = plan_jobs(
        gen["seed"], gen["train_per_class"], gen["validate_per_class"], gen["num_missing"], gen["num_corrupt"]
    )
    clips = {}
    for job in (j for j in jobs if j.split == data["val_split"] and not j.fault):
        annotation, _ = clip_annotation(job)
        frames, source_fps, tracks = render_clip(
            clip_rng(job.seed, job.split, job.index),
            job.spec,
            annotation.time_end - annotation.time_start,
            temporal=job.kind == "temporal",
        )
        clips[position[annotation.clip_id]] = (tracks, frames.shape[1:3], source_fps, job.kind)
    print(f"{len(clips)} validation videos, {checkpoint.model_name}, central view\n")
    print(
        "| net | block | clips | object area | gather mass on objects | lift | top map's mass "
        "| most object-centred map | top map on both objects |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, net in (("trained", trained), ("untrained (seed 0)", untrained)):
        for (block, kind), values in sorted(measure(net, dataset, clips, params).items()):
            area, mass, top, best, both = (statistics.mean(values[k]) for k in ("area", "mass", "top", "best", "both"))
            both_text = f"{both:.0%}" if kind == "temporal" else "–"
            print(
                f"| {name} | {block} | {kind} | {area:.1%} | {mass:.1%} | {mass / area:.2f} | {top:.1%} "
                f"| {best:.1%} | {both_text} |"
            )


if __name__ == "__main__":
    main()
