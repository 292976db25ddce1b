"""The preprocess stage on the tiny Kinetics-layout root of helpers.write_kinetics_root (real ffmpeg)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_jpeg

from pipeline.core.errors import StageError
from pipeline.data.frames import clip_jpegs
from pipeline.data.video import DecodeError, encode_video, ffmpeg_exe, ffmpeg_reason, rgb_to_yuv420p
from pipeline.preprocess import main

from helpers import (
    ANNOTATIONS_HEADER,
    CLASSES,
    FAULTS,
    FPS,
    GOOD_CLIPS,
    SHORT_SIDE,
    clip_id,
    read_manifest,
    run_stage,
    source_frames,
    tree_hashes,
    write_annotations,
    write_kinetics_root,
)


def reference_decode(video: Path, out_dir: Path, short_side: int = SHORT_SIDE) -> list[np.ndarray]:
    """Decode with a hand-written ffmpeg command to PNG files (independent of pipeline.data.video)."""
    out_dir.mkdir()
    scale = f"scale='if(lt(iw,ih),{short_side},-2)':'if(lt(iw,ih),-2,{short_side})'"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-threads",
            "1",
            "-i",
            str(video),
            "-an",
            "-vf",
            f"fps={FPS},{scale},format=yuv420p",
            str(out_dir / "%04d.png"),
        ],
        check=True,
    )
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out_dir.glob("*.png"))]


def assert_jpeg_of(jpeg: bytes, frame: np.ndarray, quality: int, what: str) -> None:
    """``jpeg`` is ``frame`` (RGB (H, W, 3)) JPEG-compressed at libjpeg ``quality``: Pillow's
    quantization tables and 4:2:0 sampling for that quality, and decoded (torchvision, as the
    readers do) no further from the frame than Pillow's own JPEG of it, up to 1 grey level."""
    reference = io.BytesIO()
    Image.fromarray(frame).save(reference, format="JPEG", quality=quality)
    ours, pillow = Image.open(io.BytesIO(jpeg)), Image.open(reference)
    assert ours.quantization == pillow.quantization, f"{what}: not libjpeg quality {quality}"
    assert ours.layer == pillow.layer, f"{what}: chroma sampling differs"
    decoded = decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8))
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, *frame.shape[:2]), what
    error = np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - frame).mean()
    pillow_error = np.abs(np.asarray(pillow.convert("RGB")).astype(int) - frame).mean()
    assert error <= pillow_error + 1, f"{what}: mean error {error:.2f} vs Pillow {pillow_error:.2f}"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("pre")
    root = write_kinetics_root(tmp / "root")
    summary = run_stage(root, tmp / "shards")
    return root, tmp / "shards", summary


def test_frames_match_an_independent_ffmpeg_decode(built, tmp_path):
    root, shards, _ = built
    manifest = read_manifest(shards)
    for split, label, yid, *_ in GOOD_CLIPS:
        row = manifest[clip_id(yid)]
        video = next((root / "videos" / split).rglob(f"{clip_id(yid)}.mp4"))
        expected = reference_decode(video, tmp_path / yid)
        assert row["status"] == "ok" and int(row["num_frames"]) == len(expected) > 0
        height, width = expected[0].shape[:2]
        assert (int(row["height"]), int(row["width"])) == (height, width)
        assert min(height, width) == SHORT_SIDE and height % 2 == 0 and width % 2 == 0
        with tarfile.open(shards / row["shard"]) as tar:
            meta = json.loads(tar.extractfile(f"{clip_id(yid)}.json").read())
            assert meta["label"] == label and meta["label_index"] == CLASSES.index(label)
            assert meta["num_frames"] == len(expected) and meta["fps"] == FPS
            for i, frame in enumerate(expected):
                jpeg = tar.extractfile(f"{clip_id(yid)}.{i:06d}.jpg").read()
                assert_jpeg_of(jpeg, frame, 90, f"{yid} frame {i}")


def test_jpegs_keep_colours_of_bt709_sources_odd_sizes_and_quality(built, tmp_path):
    root, _, _ = built
    video = next(root.rglob(f"{clip_id('ddddddddddd')}.mp4"))
    bt709 = tmp_path / "bt709.mp4"  # same pixels, tagged BT.709: decoders must use its matrix
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(video),
            "-c",
            "copy",
            "-bsf:v",
            "h264_metadata=matrix_coefficients=1",
            str(bt709),
        ],
        check=True,
    )
    for source, short_side in ((video, 31), (bt709, 32)):
        expected = reference_decode(source, tmp_path / f"{source.stem}{short_side}", short_side)
        jpegs, height, width = clip_jpegs(source, fps=FPS, short_side=short_side, jpeg_quality=50)
        assert len(jpegs) == len(expected) and (height, width) == expected[0].shape[:2]
        assert height == short_side and width % 2 == 0
        for i, (jpeg, frame) in enumerate(zip(jpegs, expected)):
            assert_jpeg_of(jpeg, frame, 50, f"{source.name} short side {short_side} frame {i}")


def test_manifest_rows_statuses_and_reasons(built):
    _, shards, summary = built
    manifest = read_manifest(shards)
    assert len(manifest) == len(GOOD_CLIPS) + len(FAULTS)
    with open(shards / "manifest.csv", newline="") as f:
        keys = [(row["split"], row["clip_id"]) for row in csv.DictReader(f)]
    assert keys == sorted(keys)
    assert manifest[clip_id(FAULTS["missing"])]["status"] == "missing"
    not_a_container = "not in a video container read here"  # ffmpeg never opens them
    for kind, says in [
        ("corrupt", "Invalid data|moov"),
        ("truncated", "Invalid data|moov"),
        ("zero_byte", not_a_container),
        ("text", not_a_container),
    ]:
        row = manifest[clip_id(FAULTS[kind])]
        assert row["status"] == "failed", kind
        assert re.search(says, row["reason"]), row["reason"]
        assert row["shard"] == "" and row["num_frames"] == ""
    assert summary["splits"]["train"] == {
        "ok": 4,
        "missing": 1,
        "failed": 4,
        "shards": 2,
        "frames": sum(int(manifest[clip_id(c[2])]["num_frames"]) for c in GOOD_CLIPS if c[0] == "train"),
    }


def test_provenance_records_the_decode_settings_by_their_config_names(built):
    from pipeline.data.preprocessing import DecodeSettings

    settings = DecodeSettings(fps=FPS, short_side=SHORT_SIDE, jpeg_quality=90, trim=False, samples_per_shard=2)
    params = {"fps": float(FPS), "short_side": SHORT_SIDE, "jpeg_quality": 90, "trim": False, "samples_per_shard": 2}
    assert settings.provenance()["params"] == params
    assert json.loads((built[1] / "provenance.json").read_text())["params"] == params


def test_shards_hold_sorted_clips_in_webdataset_layout(built):
    _, shards, _ = built
    assert sorted(p.relative_to(shards).as_posix() for p in shards.rglob("*.tar")) == [
        "train/train-000000.tar",
        "train/train-000001.tar",
        "validate/validate-000000.tar",
    ]
    assert not list(shards.rglob("*.tmp"))
    keys = []
    for shard in sorted((shards / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
        assert all(m.mode == 0o644 for m in members)
        keys += list(dict.fromkeys(m.name.split(".")[0] for m in members))
    assert keys == sorted(clip_id(c[2]) for c in GOOD_CLIPS if c[0] == "train")


def test_output_is_byte_identical_whatever_the_worker_count(built, tmp_path):
    root, shards, _ = built
    (tmp_path / "two").mkdir()  # made beforehand, empty: no earlier run's state to clear
    run_stage(root, tmp_path / "two", workers=2)
    assert tree_hashes(tmp_path / "two") == tree_hashes(shards)


def test_rerun_keeps_shards_and_changed_params_rebuild(built, tmp_path):
    root, shards, _ = built
    out = tmp_path / "out"
    run_stage(root, out)
    first = tree_hashes(out)
    assert run_stage(root, out)["reused_shards"] == 3
    assert tree_hashes(out) == first
    changed = run_stage(root, out, jpeg_quality=50)
    assert changed["reused_shards"] == 0 and tree_hashes(out) != first
    assert run_stage(root, out, samples_per_shard=10)["splits"]["train"]["shards"] == 1
    assert sorted(p.name for p in (out / "train").iterdir()) == ["train-000000.tar"]


def quantization(jpeg: bytes) -> dict[int, list[int]]:
    """A JPEG's quantization tables (what its quality setting chose)."""
    return {k: list(v) for k, v in Image.open(io.BytesIO(jpeg)).quantization.items()}


def reference_quantization(quality: int) -> dict[int, list[int]]:
    """The tables libjpeg-turbo (simplejpeg, as the stage uses) writes at ``quality``."""
    import simplejpeg

    return quantization(simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8), quality=quality))


def test_stage_main_exits_zero_with_bad_videos_and_two_on_bad_root(built, tmp_path, capsys):
    root, _, _ = built
    out = tmp_path / "cli"
    args = [
        f"data.root={root}",
        f"data.shards_dir={out}",
        f"data.fps={FPS}",
        f"data.short_side={SHORT_SIDE}",
        "data.jpeg_quality=40",  # not the default 90: the stage must pass it on
        "data.workers=2",
        "data.samples_per_shard=2",
    ]
    assert main(args) == 0
    assert "4 ok, 1 missing, 4 failed" in capsys.readouterr().out
    with tarfile.open(sorted((out / "train").glob("*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        frame = tar.extractfile(member).read()
    assert quantization(frame) == reference_quantization(40) != reference_quantization(90)
    assert main([f"data.root={tmp_path / 'nowhere'}", f"data.shards_dir={out}"]) == 2
    assert "nowhere" in capsys.readouterr().err


def ok_rows(shards: Path) -> list[dict]:
    return [row for row in read_manifest(shards).values() if row["status"] == "ok"]


def decoded_fps(shards: Path) -> set[float]:
    return {float(row["fps"]) for row in ok_rows(shards)}


def short_sides(shards: Path) -> set[int]:
    return {min(int(row["height"]), int(row["width"])) for row in ok_rows(shards)}


def train_shards(shards: Path) -> int:
    return len(list((shards / "train").glob("*.tar")))


@pytest.mark.parametrize(
    ("override", "observe", "expected"),
    [
        ("data.fps=5", decoded_fps, {5.0}),
        ("data.short_side=24", short_sides, {24}),
        ("data.samples_per_shard=1", train_shards, 4),  # the 4 ok train clips
    ],
    ids=["fps", "short_side", "samples_per_shard"],
)
def test_the_stage_decodes_as_its_data_settings_say(built, tmp_path, override, observe, expected):
    """The stage's command line reaches the decoder and the shard writer (``built`` was made
    with other settings, so the observation tells them apart)."""
    root, built_shards, _ = built
    out = tmp_path / "shards"
    assert main([f"data.root={root}", f"data.shards_dir={out}", "data.workers=1", override]) == 0
    assert observe(out) == expected != observe(built_shards)


def test_data_classes_names_the_class_list_that_numbers_the_labels(built, tmp_path):
    """``data.classes``: another file than ``<root>/classes.txt`` decides the label indices."""
    root, _, _ = built
    reversed_classes = tmp_path / "reversed.txt"
    reversed_classes.write_text("".join(f"{name}\n" for name in reversed(CLASSES)))
    out = tmp_path / "shards"
    args = [f"data.root={root}", f"data.shards_dir={out}", "data.workers=1", f"data.classes={reversed_classes}"]
    assert main(args) == 0
    rows = ok_rows(out)
    assert {(r["label"], int(r["label_index"])) for r in rows} == {
        (label, len(CLASSES) - 1 - CLASSES.index(label)) for label in {r["label"] for r in rows}
    }


def test_data_trim_keeps_the_annotated_seconds_only(tmp_path):
    """A 3 s video annotated 1..2 s: 10 frames at 10 fps with ``data.trim=true``, all 30 without."""
    root = write_annotations(
        tmp_path / "root", CLASSES, {"train.csv": ANNOTATIONS_HEADER + '"abseiling",trimmedclip,1,2,train,0\n'}
    )
    (root / "videos/train/abseiling").mkdir(parents=True)
    encode_video(source_frames(30, 48, 32, 0), root / f"videos/train/abseiling/{clip_id('trimmedclip', 1, 2)}.mp4", 10)
    frames = {}
    for trim in ("true", "false"):
        out = tmp_path / f"trim-{trim}"
        assert main([f"data.root={root}", f"data.shards_dir={out}", "data.workers=1", f"data.trim={trim}"]) == 0
        [row] = ok_rows(out)
        frames[trim] = int(row["num_frames"])
    assert frames == {"true": 10, "false": 30}


def test_data_workers_processes_decode_the_clips(built, tmp_path, monkeypatch):
    """The stage hands ``data.workers`` to the decoder pool (the bytes do not depend on it)."""
    import pipeline.data.preprocessing as preprocessing

    pools: list[int] = []
    decode_all = preprocessing.decode_all
    monkeypatch.setattr(
        preprocessing, "decode_all", lambda jobs, workers: (pools.append(workers), decode_all(jobs, workers))[1]
    )
    root, built_shards, _ = built
    out = tmp_path / "shards"
    args = [f"data.root={root}", f"data.shards_dir={out}", f"data.short_side={SHORT_SIDE}", "data.samples_per_shard=2"]
    assert main([*args, "data.workers=3"]) == 0
    assert pools == [3] and tree_hashes(out) == tree_hashes(built_shards)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_bytes(tmp_path):
    root = write_kinetics_root(tmp_path / "root", faults=False, extra_train=6)
    args = [
        sys.executable,
        "-m",
        "pipeline.preprocess",
        f"data.root={root}",
        f"data.fps={FPS}",
        f"data.short_side={SHORT_SIDE}",
        "data.workers=1",
        "data.samples_per_shard=1",
    ]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        args + [f"data.shards_dir={killed}"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
    )
    second = killed / "train" / "train-000001.tar"  # once it exists, shard 0 is finished
    deadline = time.monotonic() + 60
    while not second.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert second.exists()
    assert not (killed / "manifest.csv").exists(), "the stage finished before it was killed"
    resumed = run_stage(root, killed, samples_per_shard=1)
    assert resumed["reused_shards"] >= 1
    run_stage(root, tmp_path / "clean", samples_per_shard=1)
    assert tree_hashes(killed) == tree_hashes(tmp_path / "clean")


def test_a_truncated_faststart_mp4_is_failed_not_kept_short(tmp_path):
    """The index (moov) at the front: the cut file still decodes, without error, to 30 % of it."""
    whole = encode_video(source_frames(50, 64, 48, 0), tmp_path / "whole.mp4", 10)  # 5 s
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(whole), "-c", "copy", "-movflags", "+faststart", str(faststart)],
        check=True,
    )
    assert len(clip_jpegs(faststart, fps=FPS, short_side=SHORT_SIDE, jpeg_quality=90)[0]) == 50
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(
        DecodeError, match=r"^truncated: \d+ frames \([\d.]+ s\) decoded of the 5.0 s the container declares$"
    ):
        clip_jpegs(cut, fps=FPS, short_side=SHORT_SIDE, jpeg_quality=90)


def test_a_run_with_other_params_starts_clean_and_readers_refuse_mixed_shards(tmp_path, monkeypatch):
    from pipeline.data.clips import uniform_clip_indices
    from pipeline.data.shard_writer import SplitWriter
    from pipeline.data.shards import ClipDataset

    root = write_kinetics_root(tmp_path / "root", faults=False)
    shards = tmp_path / "shards"
    run_stage(root, shards, samples_per_shard=1)
    old_shard = (shards / "train/train-000003.tar").read_bytes()

    def die_after_first_clip(self, *args):
        raise KeyboardInterrupt  # killed while writing the first clip of the new params

    monkeypatch.setattr(SplitWriter, "add", die_after_first_clip)
    with pytest.raises(KeyboardInterrupt):
        run_stage(root, shards, samples_per_shard=1, short_side=24)
    monkeypatch.undo()
    assert not (shards / "manifest.csv").exists()  # nothing will validate
    assert not list(shards.rglob("*.tar")) and not list(shards.rglob("*.tmp"))  # the old run is gone
    assert json.loads((shards / "provenance.json").read_text())["params"]["short_side"] == 24

    run_stage(root, shards, samples_per_shard=1, short_side=24)
    (shards / "train/train-000009.tar").write_bytes(old_shard)  # a shard of the old run, left behind
    sampler = lambda n, g: [uniform_clip_indices(n, 2, 1, 1)[0]]  # noqa: E731
    with pytest.raises(
        StageError,
        match=r"1 clips \(first \w+ in train-000009.tar\) were written by another "
        r"preprocess run than provenance.json names",
    ):
        ClipDataset(shards, "train", sampler)


@pytest.fixture
def full_disk(tmp_path):
    """A 96 KiB tmpfs: the stage's output fills it mid-run (mounting needs root, as here and in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(built, full_disk, monkeypatch, capsys):
    root, _, _ = built
    monkeypatch.chdir(full_disk.parent)
    code = main(
        [
            f"data.root={root}",
            f"data.shards_dir={full_disk / 'shards'}",
            "data.workers=1",
            f"data.short_side={SHORT_SIDE}",
            "data.samples_per_shard=2",
        ]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line and not line.startswith("preprocess:")]
    assert code == 2 and lines == [
        f"error: {full_disk / 'shards'}: cannot write the shards (No space left on "
        "device); free space or set data.shards_dir to a writable folder"
    ], lines
    assert not [p for p in full_disk.rglob("*") if p.name.endswith(".tmp")]
    assert not (full_disk / "shards/manifest.csv").exists()


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            b"frame=    1 fps=0.0\n[mov,mp4,m4a @ 0x55d1c0] moov atom not found\r\nsize=       0kB\n",
            "moov atom not found",
        ),
        (
            "Input #0\n[fc @ 0xab] Stream specifier ':v' in filtergraph description [0:v]fps matches no streams.\n"
            "Error binding filtergraph inputs/outputs: Invalid argument",
            "no video stream",
        ),
        (b"caf\xc3\xa9 \xff broken\n\n", "caf\u00e9 \ufffd broken"),  # UTF-8, a bad byte replaced
        (None, "ffmpeg failed without a message"),
        (b"frame=   10 fps=0.0 q=-0.0 size=N/A\n", "ffmpeg failed without a message"),
    ],
    ids=["last-line-without-context", "no-video-stream", "utf-8", "none", "progress-only"],
)
def test_ffmpeg_reason_is_its_last_meaningful_line(stderr, reason) -> None:
    """What a failed decode or encode reports: ffmpeg's last line that is not progress, without
    its ``[demuxer @ 0x..]`` context."""
    assert ffmpeg_reason(stderr) == reason


def test_an_encode_ffmpeg_fails_is_one_line_naming_the_file_and_ffmpeg_s_reason(tmp_path) -> None:
    target = tmp_path / "no-such-folder" / "clip.mp4"
    with pytest.raises(StageError) as raised:
        encode_video(source_frames(4, 16, 16, 0), target, fps=10)
    message = str(raised.value)
    assert message.startswith(f"ffmpeg could not encode {target}: ") and "No such file or directory" in message
    assert "\n" not in message and not target.parent.exists()


def test_rgb_becomes_bt601_limited_range_yuv420p_frame_after_frame() -> None:
    """The encoder's input: per frame the Y plane, then Cb and Cr of each 2 x 2 block's mean, each
    within 1 of BT.601's real-valued limited-range formula (the integer maths only rounds)."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    raw = np.frombuffer(rgb_to_yuv420p(frames), np.uint8).reshape(3, -1).astype(float)
    luma, chroma = raw[:, : 8 * 12].reshape(3, 8, 12), raw[:, 8 * 12 :].reshape(3, 2, 4, 6)
    rgb = frames.astype(float)
    means = rgb.reshape(3, 4, 2, 6, 2, 3).mean((2, 4))
    expected_luma = 16 + rgb @ [65.481, 128.553, 24.966] / 255
    expected_cb = 128 + means @ [-37.797, -74.203, 112.0] / 255
    expected_cr = 128 + means @ [112.0, -93.786, -18.214] / 255
    assert np.abs(luma - expected_luma).max() < 1
    assert np.abs(chroma[:, 0] - expected_cb).max() < 1 and np.abs(chroma[:, 1] - expected_cr).max() < 1
