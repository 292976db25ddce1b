"""The synthetic Kinetics-layout dataset: classes that need long-range context, exact bytes.

Each clip shows two objects in opposite halves of the frame. The four classes are
{same colour, different colours} x {moving horizontally, moving vertically}. The motion is
visible in each object on its own; the colour relation is not: either object's hue is uniform
in every class, so only a model that relates the two objects can tell same from different
colours, and a model that never sees both at once is at best at 50 % (chance 25 %). Half the
clips of each class are *spatial* (both objects on screen throughout, far apart) and half
*temporal* (the first object only in the first 40 % of the frames, the second only in the last
40 %: never on screen together), so the relation must be had across space or across time; the
annotation CSVs' ``kind`` column says which. See docs/data.md; the generate stage
(``python -m pipeline.generate``) writes it.

The output is a Kinetics root (``classes.txt``, ``annotations/{train,validate}.csv``,
``videos/<split>/<label>/<clip>.mp4``) with a few missing and corrupt videos, as in the real
downloads. Every clip comes from its own seeded generator, so the bytes are identical on every
run and for any worker count, and on every x86-64 CPU: the pixels come from numpy's integer
and IEEE-exact float operations only (+ - * / sqrt, rounding; no libm or SIMD transcendental
functions), the RGB to Y'CbCr conversion is integer maths, and libx264 encodes at a constant QP
(no float rate control, macroblock tree or adaptive quantisation) with its SSE2 kernels, whose
output then equals its C code's, whatever the CPU offers.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import StageError
from pipeline.data.kinetics import Annotation, quote_label
from pipeline.data.video import WHEEL_FFMPEG, encode_video, ffmpeg_exe


@dataclass(frozen=True)
class ClassSpec:
    """One synthetic class: whether B's colour is A's (a relation) and the axis both move along."""

    name: str
    same_colour: bool
    horizontal: bool


CLASSES = (
    ClassSpec("same colour, moving horizontally", True, True),
    ClassSpec("same colour, moving vertically", True, False),
    ClassSpec("different colours (hues 90+ degrees apart), moving horizontally", False, True),
    ClassSpec("different colours (hues 90+ degrees apart), moving vertically", False, False),
)
SPLITS = ("train", "validate")
CSV_HEADER = "label,youtube_id,time_start,time_end,split,is_cc,kind\n"
KINDS = ("spatial", "temporal")  # both objects on screen throughout / one after the other

RESOLUTIONS = ((96, 128), (120, 160), (112, 112), (128, 96), (90, 160), (144, 176))  # (H, W)
FRAME_RATES = (12, 15, 20, 24, 25)
DURATIONS_S = {"spatial": (3, 4, 5), "temporal": (3, 4)}  # docs/data.md: every 8 x 4 clip at 10 fps
# of a temporal clip of <= 4 s shows both objects (>= 2 frames each)
VISIBLE_FIFTHS = 2  # a temporal clip's object is on screen in 2/5 of the frames (rounded up)
SHAPES = ("disc", "square", "triangle")
# Geometry in units of the frame's short side S, inside the centred S x S "stage" (what a
# centre crop keeps): objects stay MARGIN from its border and GAP/2 from its midline.
RADIUS_RANGE = (0.095, 0.125)  # >= 6 px once the short side is scaled to 64
MARGIN = 0.07  # a 56 px centre crop of a 64 px short side cuts 4 px (0.0625) per side
GAP = 0.14
TRAVEL_RANGE = (0.4, 0.6)  # path length in stage units, capped by the length of the object's half
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
NOISE_TERMS, NOISE_HALF_WIDTH = 4, 4  # grey noise: a sum of 4 uniform integers in -4..4, sd 5.2 levels
# At a constant QP, x264's SSE2 kernels (every x86-64 CPU has them) give the bytes of its C code;
# its AVX2/AVX-512 kernels do not, nor does SSE2 under CRF (the float macroblock-tree kernel).
_SIN_TAYLOR = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(8))  # x, x^3, ..., x^15


@dataclass(frozen=True)
class ObjectTrack:
    """One rendered object: its look and its centre in every frame (pixels, x right, y down)."""

    shape: str
    radius: float  # pixels; the shape lies inside this circle
    hue: float  # degrees in [0, 360)
    rgb: tuple[int, int, int]
    direction: tuple[float, float]  # unit vector of its line of motion (x, y)
    centres: np.ndarray  # (T, 2) float, (x, y); off screen: where it was last or will be first
    visible: np.ndarray  # (T,) bool, the frames it is drawn in


def _hsv_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue / 360.0, saturation, value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at the origin; every shape fits in the radius circle."""
    if shape == "disc":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":  # same area as the disc
        half = radius * np.sqrt(np.pi) / 2
        return np.maximum(np.abs(dx), np.abs(dy)) <= half
    # upward equilateral triangle with circumradius ``radius``
    return (dy <= radius / 2) & (np.sqrt(3) * np.abs(dx) - dy <= radius)


def exact_sin(x: np.ndarray) -> np.ndarray:
    """sin of float64 ``x`` from + - * and rounding only: the same bits on every CPU.

    numpy's ``sin`` picks SIMD kernels per CPU and libm's has FMA variants; this reduces to
    [-pi/2, pi/2] and sums the Taylor series to x^15 (error < 1e-11).
    """
    turns = np.asarray(x, dtype=np.float64) / (2 * math.pi)
    r = (turns - np.rint(turns)) * (2 * math.pi)  # [-pi, pi]
    r = np.where(r > math.pi / 2, math.pi - r, np.where(r < -math.pi / 2, -math.pi - r, r))
    r2, acc = r * r, np.full_like(r, _SIN_TAYLOR[-1])
    for coefficient in reversed(_SIN_TAYLOR[:-1]):
        acc = acc * r2 + coefficient
    return acc * r


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dim, low-saturation textured background, (H, W, 3) float in [0, 1]."""
    base = np.array(
        colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.45))
    )
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    texture = np.zeros((height, width))
    for _ in range(4):
        fx, fy = rng.uniform(-4, 4, size=2)
        amplitude, phase = rng.uniform(0.02, 0.05), rng.uniform(0, 2 * np.pi)
        texture += amplitude * exact_sin(2 * np.pi * (fx * x + fy * y) + phase)
    tint = rng.uniform(0.5, 1.0, size=3)
    return np.clip(base + texture[..., None] * tint, 0.0, 1.0).astype(np.float32)


def visible_frames(num_frames: int, temporal: bool) -> tuple[np.ndarray, np.ndarray]:
    """(T,) masks of the frames each object is on screen: all of them, or for a temporal clip the
    first and the last 2/5 (rounded up; the fifth between them shows neither)."""
    every = np.ones(num_frames, dtype=bool)
    if not temporal:
        return every, every
    shown = -(-VISIBLE_FIFTHS * num_frames // 5)
    first = np.arange(num_frames) < shown
    return first, first[::-1].copy()


def _path(middle: np.ndarray, travel: float, direction: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(T, 2) centres in stage units: one crossing at constant speed over the visible frames,
    held at its ends outside them."""
    steps = np.cumsum(visible) - 1  # index of the latest visible frame (-1 before the first)
    progress = np.linspace(-0.5, 0.5, int(visible.sum()))[np.clip(steps, 0, None)]
    return middle + travel * progress[:, None] * direction


def render_clip(
    rng: np.random.Generator, spec: ClassSpec, duration_s: int, temporal: bool = False
) -> tuple[np.ndarray, int, tuple[ObjectTrack, ObjectTrack]]:
    """Draw one ``duration_s`` clip of class ``spec``: frames uint8 (T, H, W, 3), fps, object tracks.

    Resolution, frame rate, background, shapes, sizes, hues, path lengths and each object's
    sense of motion (left/right or up/down) are random. Each object crosses its own half of
    the centred stage once, at constant speed, along the class's axis, while it is on screen
    (``visible_frames``: throughout, or one object after the other when ``temporal``); the halves
    lie side by side across the motion (top and bottom for horizontal motion), so the objects
    never overlap or leave the frame.
    """
    height, width = RESOLUTIONS[rng.integers(len(RESOLUTIONS))]
    fps = int(FRAME_RATES[rng.integers(len(FRAME_RATES))])
    num_frames = duration_s * fps
    short = min(height, width)
    origin = np.array([(width - short) / 2, (height - short) / 2])

    axis = np.array([1.0, 0.0]) if spec.horizontal else np.array([0.0, 1.0])  # (x, y)
    senses = rng.choice([-1.0, 1.0], size=2)
    directions = (senses[0] * axis, senses[1] * axis)
    hue_a, hue_offset = rng.uniform(0, 360), rng.uniform(90, 270)  # both drawn in every class
    hues = (hue_a, hue_a if spec.same_colour else (hue_a + hue_offset) % 360)
    split_axis = int(spec.horizontal)  # halves side by side across the motion: room to move
    halves = (0, 1) if rng.uniform() < 0.5 else (1, 0)

    frames = _background(rng, height, width)[None].repeat(num_frames, axis=0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    tracks = []
    for direction, hue, half, visible in zip(directions, hues, halves, visible_frames(num_frames, temporal)):
        radius = rng.uniform(*RADIUS_RANGE)
        low = np.full(2, MARGIN + radius)
        high = np.full(2, 1 - MARGIN - radius)
        if half == 0:
            high[split_axis] = 0.5 - GAP / 2 - radius
        else:
            low[split_axis] = 0.5 + GAP / 2 + radius
        travel = min(rng.uniform(*TRAVEL_RANGE), (high - low) @ axis)
        extent = travel * axis
        middle = rng.uniform(low + extent / 2, high - extent / 2)
        centres = origin + _path(middle, travel, direction, visible) * short  # (T, 2) pixels
        shape = SHAPES[rng.integers(len(SHAPES))]
        rgb = _hsv_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
        # draw only inside the box the object sweeps over the clip
        x0, y0 = np.floor(centres.min(0) - radius * short).astype(int)
        x1, y1 = np.ceil(centres.max(0) + radius * short).astype(int) + 1
        mask = _shape_mask(
            shape,
            x[None, y0:y1, x0:x1] - centres[visible, 0, None, None],
            y[None, y0:y1, x0:x1] - centres[visible, 1, None, None],
            radius * short,
        )  # (visible T, y1 - y0, x1 - x0)
        frames[visible, y0:y1, x0:x1] = np.where(
            mask[..., None], np.array(rgb, dtype=np.float32) / 255, frames[visible, y0:y1, x0:x1]
        )
        tracks.append(
            ObjectTrack(shape, radius * short, hue, rgb, (direction[0], direction[1]), centres, visible)
        )
    return _with_noise(rng, frames), fps, (tracks[0], tracks[1])


def _with_noise(rng: np.random.Generator, frames: np.ndarray) -> np.ndarray:
    """Float RGB frames in 0..1 as uint8 with grey noise: a sum of uniform integers (no libm)."""
    noise = rng.integers(-NOISE_HALF_WIDTH, NOISE_HALF_WIDTH + 1,
                         size=(NOISE_TERMS, *frames.shape[:3], 1), dtype=np.int8).sum(0, dtype=np.int8)
    return np.clip(frames * 255 + 0.5 + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClipJob:
    """Everything needed to write one annotated clip; ``fault`` is '', 'missing' or 'corrupt'."""

    seed: int
    split: str
    index: int
    spec: ClassSpec
    fault: str
    ffmpeg_setting: str = WHEEL_FFMPEG  # video.ffmpeg

    @property
    def kind(self) -> str:
        """``spatial`` or ``temporal``: alternating per round of the classes, so half of each class."""
        return KINDS[self.index // len(CLASSES) % len(KINDS)]


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of clip ``index`` of ``split``: independent of every other clip."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def clip_annotation(job: ClipJob) -> tuple[Annotation, int]:
    """The clip's annotation and its ``is_cc`` flag, drawn from the clip's own generator.

    Uses a generator separate from the pixels so that the clip id is known without rendering.
    """
    rng = np.random.default_rng([job.seed, zlib.crc32(job.split.encode()), job.index, 1])
    chars = ID_ALPHABET[rng.integers(len(ID_ALPHABET), size=11)]
    if rng.uniform() < 0.15:  # real Kinetics ids often start with '-', which trips CLI tools
        chars[0] = "-"
    start = int(rng.integers(0, 300))
    durations = DURATIONS_S[job.kind]
    duration = int(durations[rng.integers(len(durations))])
    annotation = Annotation(
        label=job.spec.name,
        label_index=CLASSES.index(job.spec),
        youtube_id="".join(chars),
        time_start=start,
        time_end=start + duration,
        split=job.split,
        source=f"annotations/{job.split}.csv:{job.index + 2}",
        kind=job.kind,
    )
    return annotation, int(rng.integers(2))


def write_clip(root: Path, job: ClipJob) -> None:
    """Render and write the video of ``job`` under ``root`` (or garbage, or nothing)."""
    if job.fault == "missing":
        return
    folder = root / "videos" / job.split / job.spec.name
    folder.mkdir(parents=True, exist_ok=True)
    ann, _ = clip_annotation(job)
    duration_s = ann.time_end - ann.time_start
    rng = clip_rng(job.seed, job.split, job.index)
    frames, fps, _ = render_clip(rng, job.spec, duration_s, temporal=job.kind == "temporal")
    path = folder / f"{ann.clip_id}.mp4"
    encode_video(frames, path, fps, job.ffmpeg_setting)
    if job.fault == "corrupt":  # an interrupted download: the mp4 index (moov) is cut off
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])


def plan_jobs(
    seed: int, train_per_class: int, validate_per_class: int, num_missing: int, num_corrupt: int,
    ffmpeg_setting: str = WHEEL_FFMPEG,
) -> list[ClipJob]:
    """All clips of the dataset in CSV order; faults go to train clips chosen from ``seed``."""
    per_class = {"train": train_per_class, "validate": validate_per_class}
    if min(per_class.values()) < 1:
        raise StageError("generate.train_per_class and generate.validate_per_class must be >= 1")
    num_train = train_per_class * len(CLASSES)
    if num_missing < 0 or num_corrupt < 0 or num_missing + num_corrupt > num_train:
        raise StageError(
            f"generate.num_missing + generate.num_corrupt must be between 0 and the {num_train} "
            "train clips; lower them"
        )
    faulty = np.random.default_rng([seed, 2]).permutation(num_train)[: num_missing + num_corrupt]
    fault_of = {int(i): "missing" if k < num_missing else "corrupt" for k, i in enumerate(faulty)}
    return [
        ClipJob(seed, split, i, CLASSES[i % len(CLASSES)],
                fault_of.get(i, "") if split == "train" else "", ffmpeg_setting)
        for split in SPLITS
        for i in range(per_class[split] * len(CLASSES))
    ]


def _classes_text() -> str:
    return "".join(f"{spec.name}\n" for spec in CLASSES)


def _write_annotations(root: Path, jobs: list[ClipJob]) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "classes.txt").write_text(_classes_text())
    for split in SPLITS:
        lines = [CSV_HEADER]
        for job in (j for j in jobs if j.split == split):
            a, is_cc = clip_annotation(job)
            fields = (quote_label(a.label), a.youtube_id, a.time_start, a.time_end, split, is_cc, a.kind)
            lines.append(",".join(map(str, fields)) + "\n")
        (root / "annotations" / f"{split}.csv").write_text("".join(lines))


def _check_replaceable(root: Path) -> None:
    """Refuse to replace ``root`` unless it is absent, empty or an earlier synthetic dataset."""
    if not root.is_dir() or not any(root.iterdir()):
        return
    classes = root / "classes.txt"
    if not (classes.is_file() and classes.read_text() == _classes_text()):
        raise StageError(
            f"{root} exists and is not a synthetic dataset; point data.root at a new folder"
        )


def _replace_dir(built: Path, root: Path) -> None:
    """Move the finished dataset ``built`` to ``root``, replacing an earlier one as a whole."""
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.replace(root, old)
        os.replace(built, root)
        shutil.rmtree(old)
    else:
        os.replace(built, root)


def generate_dataset(
    root: Path,
    *,
    seed: int,
    train_per_class: int,
    validate_per_class: int,
    num_missing: int,
    num_corrupt: int,
    workers: int = 2,
    ffmpeg_setting: str = WHEEL_FFMPEG,
) -> dict:
    """Write the synthetic dataset to ``root`` (replaced as a whole) and return a summary.

    ``ffmpeg_setting`` is ``video.ffmpeg``. The summary lists the clip counts per split and
    the clip ids left missing or corrupt.
    """
    root = Path(root)
    jobs = plan_jobs(seed, train_per_class, validate_per_class, num_missing, num_corrupt,
                     ffmpeg_setting)
    ffmpeg_exe(ffmpeg_setting)  # a bad video.ffmpeg fails here, in one line, before any work
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    built = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(built, ignore_errors=True)
    built.mkdir(parents=True)
    try:
        _write_annotations(built, jobs)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(write_clip, [built] * len(jobs), jobs, chunksize=4))
        else:
            for job in jobs:
                write_clip(built, job)
        _replace_dir(built, root)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return {
        "root": str(root),
        "classes": [spec.name for spec in CLASSES],
        "clips": {split: sum(j.split == split for j in jobs) for split in SPLITS},
        "missing": [clip_annotation(j)[0].clip_id for j in jobs if j.fault == "missing"],
        "corrupt": [clip_annotation(j)[0].clip_id for j in jobs if j.fault == "corrupt"],
    }
