"""Synthetic dataset generator: real ffmpeg encoding, real files, the class relations on pixels."""

from __future__ import annotations

import colorsys
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.errors import StageError
from pipeline.data.clips import clip_span, uniform_clip_indices
from pipeline.data.kinetics import find_video, load_classes, read_annotations
from pipeline.data.synthetic import (
    CLASSES,
    DURATIONS_S,
    FRAME_RATES,
    GAP,
    KINDS,
    ClipJob,
    clip_annotation,
    clip_rng,
    exact_sin,
    generate_dataset,
    plan_jobs,
    render_clip,
    visible_frames,
)
from pipeline.data.video import ffmpeg_exe
from pipeline.generate import main

from helpers import tree_hashes

REPO = Path(__file__).resolve().parents[1]
TINY = dict(seed=3, train_per_class=1, validate_per_class=1, num_missing=1, num_corrupt=1)


def decode(path: Path) -> tuple[np.ndarray, float]:
    """Decode a video with ffmpeg: frames uint8 (T, H, W, 3) and the stream's frame rate."""
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    match = re.search(r"Video: h264.*?, yuv420p.*?, (\d+)x(\d+).*?, ([\d.]+) fps", info.stderr)
    assert match, info.stderr
    width, height, fps = int(match[1]), int(match[2]), float(match[3])
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3), fps


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset written through the stage's command line (composed config, overrides)."""
    workdir = tmp_path_factory.mktemp("stage")
    overrides = [f"generate.{key}={value}" for key, value in TINY.items()]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)  # no params.yaml here: the config is composed from pipeline/conf
        assert main(["data.root=data/synthetic", "data.workers=1", *overrides]) == 0
    return workdir / "data/synthetic"


def test_layout_is_a_readable_kinetics_root(dataset: Path) -> None:
    classes = load_classes(dataset / "classes.txt")
    assert classes == [spec.name for spec in CLASSES]
    assert any("," in c and "(" in c for c in classes)
    csv_text = (dataset / "annotations/train.csv").read_text()
    assert csv_text.startswith("label,youtube_id,time_start,time_end,split,is_cc,kind\n")
    assert '\n"same colour, moving horizontally",' in csv_text
    anns = read_annotations(dataset, classes)
    assert anns == [clip_annotation(job)[0] for job in plan_jobs(**TINY)]  # what the generator meant
    assert [(a.split, a.label_index) for a in anns] == [(s, i) for s in ("train", "validate") for i in range(4)]
    videos = [find_video(dataset, a) for a in anns]
    assert sum(v is None for v in videos) == 1
    for ann, video in zip(anns, videos):
        if video is not None:
            assert video == dataset / "videos" / ann.split / ann.label / f"{ann.clip_id}.mp4"
    assert sorted(p.name for p in dataset.parent.iterdir()) == ["synthetic"]  # no temp dirs left


def test_videos_decode_to_the_rendered_frames_and_one_is_corrupt(dataset: Path) -> None:
    anns = read_annotations(dataset, load_classes(dataset / "classes.txt"))
    jobs = plan_jobs(**TINY)
    corrupt = 0
    for ann, job in zip(anns, jobs):
        video = find_video(dataset, ann)
        if video is None:
            continue
        probe = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "null", "-"], capture_output=True)
        if probe.returncode != 0:
            corrupt += 1
            continue
        frames, fps = decode(video)
        expected, expected_fps, _ = render_clip(
            clip_rng(job.seed, job.split, job.index), job.spec, ann.time_end - ann.time_start, job.kind == "temporal"
        )
        assert fps == expected_fps
        assert frames.shape == expected.shape
        assert frames.shape[0] == (ann.time_end - ann.time_start) * fps
        assert np.abs(frames.astype(int) - expected).mean() < 6  # lossy, but the same picture
    assert corrupt == 1


def test_output_is_byte_identical_across_runs_and_worker_counts(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "synthetic"
    generate_dataset(other, **TINY, workers=2)
    (other / "videos/train/stale.mp4").write_bytes(b"left over")
    summary = generate_dataset(other, **TINY, workers=2)  # rerun replaces the whole root
    assert tree_hashes(other) == tree_hashes(dataset)
    assert summary["clips"] == {"train": 4, "validate": 4}
    assert len(summary["missing"]) == len(summary["corrupt"]) == 1


def decodes(video: Path) -> bool:
    probe = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "null", "-"], capture_output=True)
    return probe.returncode == 0


def test_the_stage_generates_what_its_generate_settings_say(dataset: Path, tmp_path: Path) -> None:
    """The stage's command line reaches the generator: the clips planned for that seed and those
    counts, that many missing and corrupt videos, and other bytes than another seed's."""
    root = tmp_path / "synthetic"
    settings = [
        "generate.seed=5",
        "generate.train_per_class=2",
        "generate.validate_per_class=1",
        "generate.num_missing=3",
        "generate.num_corrupt=2",
    ]
    assert main([f"data.root={root}", "data.workers=2", *settings]) == 0
    anns = read_annotations(root, load_classes(root / "classes.txt"))
    planned = plan_jobs(seed=5, train_per_class=2, validate_per_class=1, num_missing=3, num_corrupt=2)
    assert anns == [clip_annotation(job)[0] for job in planned]
    assert [a.split for a in anns].count("train") == 8 and [a.split for a in anns].count("validate") == 4
    videos = [video for video in (find_video(root, a) for a in anns) if video is not None]
    assert len(anns) - len(videos) == 3 and sum(not decodes(video) for video in videos) == 2
    seed_3 = {digest for path, digest in tree_hashes(dataset).items() if path.endswith(".mp4")}
    assert not seed_3 & {digest for path, digest in tree_hashes(root).items() if path.endswith(".mp4")}


def test_generates_into_a_new_nested_folder_and_past_a_killed_run_s_partial_build(
    dataset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "new/nested/synthetic"
    generate_dataset(root, workers=1, **TINY)
    assert tree_hashes(root) == tree_hashes(dataset)
    partial = root.with_name(f".synthetic.partial-{os.getpid()}")  # containers reuse pids
    (partial / "videos").mkdir(parents=True)
    (partial / "videos/left-behind.mp4").write_bytes(b"not a video")
    generate_dataset(root, workers=1, **{**TINY, "train_per_class": 2})  # two clips per class folder
    assert not partial.exists() and not list(root.rglob("left-behind.mp4"))
    assert len(read_annotations(root, load_classes(root / "classes.txt"))) == 3 * len(CLASSES)


def test_a_failed_generation_keeps_the_earlier_dataset_and_leaves_no_partial_build(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.data.synthetic as synthetic

    root = tmp_path / "synthetic"
    shutil.copytree(dataset, root)

    def disk_full(folder: Path, job: ClipJob) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic, "write_clip", disk_full)
    with pytest.raises(OSError, match="No space left"):
        generate_dataset(root, workers=1, **TINY)
    assert tree_hashes(root) == tree_hashes(dataset) and [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def test_refuses_to_overwrite_a_foreign_directory_and_bad_counts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StageError, match="is not a synthetic dataset"):
        generate_dataset(tmp_path, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(StageError, match="num_missing"):
        plan_jobs(seed=0, train_per_class=1, validate_per_class=1, num_missing=4, num_corrupt=1)


def test_youtube_ids_look_real() -> None:
    ids = [clip_annotation(ClipJob(0, "train", i, CLASSES[0], ""))[0].youtube_id for i in range(200)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{11}", i) for i in ids)
    assert 10 < sum(i.startswith("-") for i in ids) < 60
    assert len(set(ids)) == len(ids)


def circular_gap(a: float, b: float) -> float:
    return min(abs(a - b) % 360, 360 - abs(a - b) % 360)


@pytest.mark.parametrize("spec", CLASSES, ids=lambda s: s.name)
def test_class_is_the_relation_between_two_far_apart_objects(spec) -> None:
    for seed in range(6):
        frames, fps, (a, b) = render_clip(np.random.default_rng(seed), spec, 3)
        num_frames, height, width, _ = frames.shape
        assert num_frames == 3 * fps and 12 <= fps <= 25
        short = min(height, width)
        assert a.radius * 64 / short >= 6 and b.radius * 64 / short >= 6  # survives short side 64
        # colour: equal hue, or hues at least 90 degrees apart
        assert (circular_gap(a.hue, b.hue) < 1e-9) == spec.same_colour
        if not spec.same_colour:
            assert circular_gap(a.hue, b.hue) >= 90
        # motion: one constant velocity per object for the whole clip, along the class's axis
        axis = 0 if spec.horizontal else 1
        for track in (a, b):
            velocity = np.diff(track.centres, axis=0)
            np.testing.assert_allclose(velocity, np.broadcast_to(velocity[0], velocity.shape), atol=1e-9)
            assert velocity[0, 1 - axis] == 0 and abs(velocity[0, axis]) * (num_frames - 1) > 0.3 * short
        # far apart (at least GAP of background between their edges), always inside the frame
        distance = np.linalg.norm(a.centres - b.centres, axis=1)
        assert distance.min() >= a.radius + b.radius + GAP * short - 1e-6 and distance.min() >= 0.33 * short
        for track in (a, b):
            assert (track.centres - track.radius >= 0).all()
            assert (track.centres + track.radius <= [width, height]).all()
            # the pixels at the object's centre have its colour (up to the per-pixel noise)
            cx, cy = np.round(track.centres).astype(int).T
            pixels = frames[np.arange(num_frames), cy, cx].astype(int)
            assert np.abs(pixels - track.rgb).max() <= 30
            # a saturated, bright colour of the object's hue
            hue, saturation, value = colorsys.rgb_to_hsv(*np.array(track.rgb) / 255)
            assert circular_gap(360 * hue, track.hue) < 2 and saturation >= 0.74 and value >= 0.79
        # on a dim, textured background
        yy, xx = np.mgrid[0:height, 0:width]
        clear = np.ones((height, width), bool)
        for track in (a, b):
            clear &= np.hypot(xx - track.centres[0, 0], yy - track.centres[0, 1]) > track.radius + 2
        background = frames[0][clear].astype(float)
        assert background.max(axis=1).mean() < 0.6 * 255 and background.std(axis=0).min() > 0.5


def test_each_objects_colour_does_not_depend_on_the_class() -> None:
    """With the same generator state object A is identical in every class but for its motion axis."""
    renders = {spec: render_clip(np.random.default_rng(11), spec, 3) for spec in CLASSES}
    first_a = renders[CLASSES[0]][2][0]
    for spec, (_, fps, (a, _)) in renders.items():
        assert fps == renders[CLASSES[0]][1]
        assert (a.shape, a.radius, a.hue, a.rgb) == (first_a.shape, first_a.radius, first_a.hue, first_a.rgb)
        if spec.horizontal == CLASSES[0].horizontal:
            np.testing.assert_array_equal(a.centres, first_a.centres)


def test_exact_sin_is_sin_within_1e_11_over_many_turns() -> None:
    """The generator's CPU-independent sin (range reduction + Taylor series) against numpy's."""
    x = np.linspace(-60.0, 60.0, 200_001)
    assert np.max(np.abs(exact_sin(x) - np.sin(x))) < 1e-11


def test_half_of_each_class_is_spatial_and_half_temporal_and_the_csv_says_which(tmp_path: Path) -> None:
    jobs = plan_jobs(seed=0, train_per_class=4, validate_per_class=2, num_missing=0, num_corrupt=0)
    for split, per_class in (("train", 4), ("validate", 2)):
        for spec in CLASSES:
            kinds = sorted(j.kind for j in jobs if j.split == split and j.spec == spec)
            assert kinds == sorted(KINDS * (per_class // 2))
    for job in jobs:  # a temporal clip lasts at most 4 s (docs/data.md: every training clip sees both)
        annotation, _ = clip_annotation(job)
        assert annotation.kind == job.kind
        assert annotation.time_end - annotation.time_start in DURATIONS_S[job.kind]
    root = tmp_path / "synthetic"
    generate_dataset(root, seed=0, train_per_class=2, validate_per_class=2, num_missing=0, num_corrupt=0, workers=1)
    annotations = read_annotations(root, load_classes(root / "classes.txt"))
    assert [a.kind for a in annotations] == [clip_annotation(j)[0].kind for j in plan_jobs(0, 2, 2, 0, 0)]
    assert {a.kind for a in annotations} == set(KINDS)


@pytest.mark.parametrize("spec", CLASSES, ids=lambda s: s.name)
def test_a_temporal_clip_shows_its_objects_one_after_the_other(spec) -> None:
    for seed in range(4):
        frames, fps, (a, b) = render_clip(np.random.default_rng(seed), spec, 4, temporal=True)
        num_frames = len(frames)
        shown = -(-2 * num_frames // 5)
        assert a.visible.sum() == b.visible.sum() == shown and not (a.visible & b.visible).any()
        assert a.visible[:shown].all() and b.visible[-shown:].all()  # A first, B last, neither between
        axis = 0 if spec.horizontal else 1
        for track in (a, b):
            velocity = np.diff(track.centres[track.visible], axis=0)  # one crossing while on screen
            np.testing.assert_allclose(velocity, np.broadcast_to(velocity[0], velocity.shape), atol=1e-9)
            assert velocity[0, 1 - axis] == 0 and abs(velocity[0, axis]) * (shown - 1) > 0.3 * min(frames.shape[1:3])
            cx, cy = np.round(track.centres).astype(int).T
            pixels = frames[np.arange(num_frames), cy, cx].astype(int)
            on_colour = np.abs(pixels - track.rgb).max(1) <= 30
            assert on_colour[track.visible].all() and not on_colour[~track.visible].any()
        assert (circular_gap(a.hue, b.hue) < 1e-9) == spec.same_colour


def test_visible_frames_are_everything_for_a_spatial_clip() -> None:
    first, second = visible_frames(30, temporal=False)
    assert first.all() and second.all()
    first, second = visible_frames(31, temporal=True)  # 2/5 of 31 rounded up: 13
    assert first.tolist() == [True] * 13 + [False] * 18 and second.tolist() == [False] * 18 + [True] * 13


def test_every_training_clip_and_test_view_of_a_temporal_clip_shows_both_objects() -> None:
    """With the committed geometry (params.yaml: data.fps, model.clip, eval.num_clips), at every source
    frame rate and temporal duration, every training start and every test view has >= 2 frames of each
    object (frames resampled to data.fps by nearest source frame, as preprocess's fps filter)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    fps, clip = params["data"]["fps"], params["model"]["clip"]
    length, stride = clip["num_frames"], clip["stride"]
    for duration in DURATIONS_S["temporal"]:
        for source_fps in FRAME_RATES:
            source = visible_frames(duration * source_fps, temporal=True)
            count = duration * fps
            nearest = [min(round(k * source_fps / fps), duration * source_fps - 1) for k in range(count)]
            shown = [mask[nearest] for mask in source]
            starts = range(max(count - clip_span(length, stride), 0) + 1)
            views = [[min(s + i * stride, count - 1) for i in range(length)] for s in starts]
            views += uniform_clip_indices(count, length, stride, params["eval"]["num_clips"])
            for view in views:
                assert all(mask[view].sum() >= 2 for mask in shown), (duration, source_fps, view)
