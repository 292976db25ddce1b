"""The validate stage on a tiny Kinetics-layout dataset written in the contract's formats.

The good dataset (classes.txt, annotations/*.csv, manifest.csv, tar shards of real JPEGs) passes
every expectation; each fault is injected into a copy and must fail exactly the expectation
meant to catch it. Checks run in-process (Great Expectations is imported once per module);
one test runs the CLI for the exit code and the stderr lines.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from pipeline.core.errors import StageError
from pipeline.data.layout import MANIFEST_COLUMNS
from pipeline.quality.checks import Settings
from pipeline.quality.gx import run_checks
from pipeline.quality.report_html import summary_html
from pipeline.quality.validation import collect, failure_line, validate_dataset

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["abseiling", "playing cello", "skiing (not slalom or crosscountry)"]
PER_CLASS = {"train": 3, "validate": 1}
HEIGHT, WIDTH, FRAMES, FPS = 16, 20, 6, 5
CLIP_NUM_FRAMES, CLIP_STRIDE = 3, 2  # one training clip spans 5 frames
MIN_CLIPS = 2


def clip_rows() -> list[dict]:
    """Manifest rows of the good dataset: every clip ok, plus one missing validate clip."""
    rows = []
    for split, per_class in PER_CLASS.items():
        for index, label in enumerate(CLASSES):
            for k in range(per_class):
                youtube_id = f"{split[:2]}{index}x{k}abcdefg"[:11]
                start = 10 * k
                rows.append(
                    {
                        "clip_id": f"{youtube_id}_{start:06d}_{start + 3:06d}",
                        "youtube_id": youtube_id,
                        "label": label,
                        "label_index": index,
                        "split": split,
                        "time_start": start,
                        "time_end": start + 3,
                        "kind": "",
                        "status": "ok",
                        "reason": "",
                        "num_frames": FRAMES,
                        "height": HEIGHT,
                        "width": WIDTH,
                        "fps": FPS,
                        "shard": f"{split}/{split}-000000.tar",
                    }
                )
    rows.append(
        {
            **rows[-1],
            "clip_id": "va9missing0_000001_000004",
            "youtube_id": "va9missing0",
            "time_start": 1,
            "time_end": 4,
            "status": "missing",
            "reason": "no video file",
            "num_frames": "",
            "height": "",
            "width": "",
            "fps": "",
            "shard": "",
        }
    )
    return rows


def noise_frames(seed: int) -> torch.Tensor:
    """Random uint8 frames (T, C, H, W): mean ~127, std ~74."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), generator=generator, dtype=torch.uint8)


def jpegs(frames: torch.Tensor) -> list[bytes]:
    return [encode_jpeg(frame, quality=90).numpy().tobytes() for frame in frames]


def write_shard(path: Path, rows: list[dict], jpegs_of: Callable[[int], list[bytes]]) -> None:
    """A WebDataset tar of the contract: <clip>.<frame:06d>.jpg members and <clip>.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for n, row in enumerate(rows):
            members = [(f"{row['clip_id']}.{i:06d}.jpg", data) for i, data in enumerate(jpegs_of(n))]
            meta = {
                k: row[k]
                for k in (
                    "label",
                    "label_index",
                    "split",
                    "youtube_id",
                    "time_start",
                    "time_end",
                    "num_frames",
                    "height",
                    "width",
                    "fps",
                )
            }
            members.append((f"{row['clip_id']}.json", json.dumps(meta).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_dataset(base: Path) -> Settings:
    """classes.txt, annotations, manifest and shards of the good dataset under ``base``."""
    root, shards = base / "root", base / "shards"
    rows = clip_rows()
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split in PER_CLASS:
        write_csv(
            root / "annotations" / f"{split}.csv",
            ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"],
            [
                [r["label"], r["youtube_id"], r["time_start"], r["time_end"], split, 0]
                for r in rows
                if r["split"] == split
            ],
        )
        ok = [r for r in rows if r["split"] == split and r["status"] == "ok"]
        write_shard(shards / split / f"{split}-000000.tar", ok, lambda n: jpegs(noise_frames(n)))
    write_csv(shards / "manifest.csv", list(MANIFEST_COLUMNS), [[r[c] for c in MANIFEST_COLUMNS] for r in rows])
    return settings_for(base)


def settings_for(base: Path) -> Settings:
    return Settings(
        root=base / "root",
        classes_path=base / "root" / "classes.txt",
        shards_dir=base / "shards",
        report_dir=base / "reports",
        short_side=HEIGHT,
        fps=FPS,
        train_split="train",
        min_frames=(CLIP_NUM_FRAMES - 1) * CLIP_STRIDE + 1,
        max_missing_fraction=0.1,
        max_failed_fraction=0.1,
        min_clips_per_class=MIN_CLIPS,
        pixel_clips_per_shard=100,
        seed=0,
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("validate") / "good"
    write_dataset(base)
    return base


# --- faults: each edits a copy of the good dataset ----------------------------------------


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def set_cell(path: Path, column: str, value: str, where: Callable[[dict], bool]) -> None:
    """Set ``column`` to ``value`` in the rows of CSV ``path`` that ``where`` selects."""
    rows = read_csv(path)
    header = rows[0]
    for row in rows[1:]:
        if where(dict(zip(header, row))):
            row[header.index(column)] = value
    write_rows(path, rows)


def first(path: Path) -> Callable[[dict], bool]:
    """Selects the first data row of ``path``."""
    first_id = read_csv(path)[1][1]
    return lambda r: r["youtube_id"] == first_id


def drop_column(path: Path, column: str) -> None:
    rows = read_csv(path)
    i = rows[0].index(column)
    write_rows(path, [row[:i] + row[i + 1 :] for row in rows])


def drop_rows(path: Path, where: Callable[[dict], bool]) -> None:
    rows = read_csv(path)
    write_rows(path, [rows[0], *(r for r in rows[1:] if not where(dict(zip(rows[0], r))))])


def rewrite_shard(base: Path, split: str, first_jpegs: list[bytes] | None = None, drop_last: bool = False) -> None:
    """Rewrite ``split``'s shard: the first clip's frames replaced and/or the last clip left out."""
    rows = [r for r in clip_rows() if r["split"] == split and r["status"] == "ok"]
    write_shard(
        base / f"shards/{split}/{split}-000000.tar",
        rows[:-1] if drop_last else rows,
        lambda n: first_jpegs if n == 0 and first_jpegs else jpegs(noise_frames(n)),
    )


def append_row(path: Path, row: list[str]) -> None:
    write_rows(path, read_csv(path) + [row])


def in_class(index: int, keep_first: bool = False) -> Callable[[dict], bool]:
    """Selects the train rows of class ``index`` (all but the first when ``keep_first``)."""
    return lambda r: (
        r["label"] == CLASSES[index] and r["split"] == "train" and not (keep_first and r["time_start"] == "0")
    )


TRAIN_CSV, VAL_CSV = "root/annotations/train.csv", "root/annotations/validate.csv"
MANIFEST = "shards/manifest.csv"
BLACK = torch.zeros(FRAMES, 3, HEIGHT, WIDTH, dtype=torch.uint8)
# Mostly black with 5 % of the pixels at 40: decoded, mean ~3.6 (below the plausible 5), std ~5 (not flat)
DARK = ((torch.rand(FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) < 0.05) * 40).to(torch.uint8)
ENOUGH_CLIPS = f"every class has >= {MIN_CLIPS} ok clips in train"


def is_validate(row: dict) -> bool:
    return row["split"] == "validate"


def edit(path: str, column: str, value: str, where: Callable[[dict], bool] | None = None):
    """A fault: set ``column`` to ``value`` in ``path`` (relative to the dataset copy)."""
    return lambda b: set_cell(b / path, column, value, where or first(b / path))


FAULTS = {  # fault: (inject into a copy at base b, suite, expectation that must fail)
    "unknown label": (edit(TRAIN_CSV, "label", "juggling"), "annotations", "labels are in classes.txt"),
    "time_end <= time_start": (edit(TRAIN_CSV, "time_end", "0"), "annotations", "time_end > time_start"),
    "duplicate clip id": (
        lambda b: append_row(b / TRAIN_CSV, read_csv(b / TRAIN_CSV)[1]),
        "annotations",
        "clip ids are unique per split",
    ),
    "unknown split": (edit(VAL_CSV, "split", "val"), "annotations", "split values are known"),
    "missing column": (
        lambda b: drop_column(b / VAL_CSV, "time_end"),
        "annotations",
        "column time_end present in every annotation file",
    ),
    "row with an extra field": (
        lambda b: append_row(b / VAL_CSV, [CLASSES[0], "zz", "1", "4", "validate", "0", "x"]),
        "annotations",
        "every row has as many fields as its header",
    ),
    "too many missing": (edit(MANIFEST, "status", "missing", is_validate), "manifest", "fraction of missing clips"),
    "too many failed": (edit(MANIFEST, "status", "failed", is_validate), "manifest", "fraction of failed clips"),
    "too few frames": (
        edit(MANIFEST, "num_frames", "4"),
        "manifest",
        "ok clips have enough frames for one training clip",
    ),
    "wrong short side": (edit(MANIFEST, "height", "32"), "manifest", "ok clips have the configured short side"),
    "wrong fps": (edit(MANIFEST, "fps", "25"), "manifest", "ok clips have the configured fps"),
    "inconsistent label_index": (edit(MANIFEST, "label_index", "2"), "manifest", "label_index matches classes.txt"),
    "class absent in train": (lambda b: drop_rows(b / MANIFEST, in_class(2)), "train_classes", ENOUGH_CLIPS),
    "too few clips of a class in train": (
        lambda b: drop_rows(b / MANIFEST, in_class(1, keep_first=True)),
        "train_classes",
        ENOUGH_CLIPS,
    ),
    "all-black frames": (
        lambda b: rewrite_shard(b, "train", first_jpegs=jpegs(BLACK)),
        "pixels",
        "frames are not constant (all-black or blank)",
    ),
    "corrupt JPEG": (
        lambda b: rewrite_shard(b, "train", first_jpegs=[b"not a jpeg"] * FRAMES),
        "pixels",
        "shards read and sampled clips decode",
    ),
    "shard lost a clip": (
        lambda b: rewrite_shard(b, "validate", drop_last=True),
        "manifest",
        "ok clips are in their shard",
    ),
}


def faulty_copy(good: Path, tmp_path: Path, fault: str) -> Settings:
    base = tmp_path / "faulty"
    shutil.copytree(good, base, ignore=shutil.ignore_patterns("reports"))
    FAULTS[fault][0](base)
    return settings_for(base)


def failed(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["suite"], r["name"]): r for r in records if not r["passed"]}


# --- tests ---------------------------------------------------------------------------------


def test_good_dataset_passes_and_writes_the_report(good):
    summary = validate_dataset(settings_for(good))
    assert summary.success
    assert failed(summary.expectations) == {}
    text = (good / "reports/summary.json").read_text()
    report = json.loads(text)
    assert report == {"success": True, "expectations": summary.expectations}
    assert text.splitlines()[:2] == ["{", '  "success": true,']  # indented: a diff names the record that moved
    suites = {r["suite"] for r in report["expectations"]}
    assert suites == {"annotations", "manifest", "train_classes", "pixels"}
    fields = {"suite", "name", "critical", "passed", "observed", "threshold"}
    assert all(set(r) == fields for r in report["expectations"])
    index = (good / "reports/data_docs/index.html").read_text()
    assert "annotations" in index and "pixels" in index and "<strong >Data Docs</strong> | local" in index
    assert not (good / "reports/.data_docs.tmp").exists()
    page = (good / "reports/summary.html").read_text()
    assert page == summary_html(report["success"], report["expectations"])  # from summary.json's records alone
    assert '<span class="outcome passed">PASSED</span>' in page
    assert page.count("<tr class=") == len(report["expectations"])
    assert all(html.escape(r["name"], quote=False) in page for r in report["expectations"])


def test_a_rerun_rebuilds_a_missing_data_docs_site_and_keeps_the_summary_bytes(good):
    """What ``make data-docs`` relies on in a fresh clone (the site is no DVC output: GX stamps times into it)."""
    validate_dataset(settings_for(good))
    before = {name: (good / "reports" / name).read_bytes() for name in ("summary.json", "summary.html")}
    shutil.rmtree(good / "reports/data_docs")
    validate_dataset(settings_for(good))
    assert (good / "reports/data_docs/index.html").is_file()
    assert {name: (good / "reports" / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("success, outcome", [(True, "passed"), (False, "failed")])
def test_summary_page_names_the_outcome_in_its_title_and_heading(success: bool, outcome: str) -> None:
    record = {"suite": "pixels", "name": "decodes", "critical": True, "passed": success, "observed": 0, "threshold": 0}
    page = summary_html(success, [record])
    assert f"<title>Data validation: {outcome}</title>" in page
    assert f'<h1>Data validation: <span class="outcome {outcome}">{outcome.upper()}</span></h1>' in page


def test_summary_page_is_offline_and_escapes_what_it_shows():
    flagged = {"suite": "pixels", "name": "mean < 250", "critical": False, "passed": False}
    records = [
        {**flagged, "observed": "1 of 2 rows: <b> (0.0)", "threshold": "5 <= mean <= 250"},
        {
            "suite": "manifest",
            "name": "columns",
            "critical": True,
            "passed": True,
            "observed": ["a", "b"],
            "threshold": None,
        },
    ]
    page = summary_html(True, records)
    assert "1 of 2 rows: &lt;b&gt; (0.0)" in page and "<b>" not in page
    assert "mean &lt; 250" in page and "5 &lt;= mean &lt;= 250" in page
    assert '<td class="observed">["a", "b"]</td>' in page  # non-strings as JSON
    assert '<tr class="failed-warning">' in page and '<tr class="passed">' in page
    assert "1 of 2 expectations passed; 0 critical failed, 1 non-critical failed" in page
    lowered = page.lower()
    assert "<script" not in lowered and "http://" not in lowered and "https://" not in lowered
    assert "<link" not in lowered and " src=" not in lowered  # nothing loaded from anywhere


def test_records_are_deterministic(good):
    assert run_checks(*collect(settings_for(good))) == run_checks(*collect(settings_for(good)))


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_fails_the_expectation_named_for_it(good, tmp_path, fault):
    _, suite, name = FAULTS[fault]
    records = run_checks(*collect(faulty_copy(good, tmp_path, fault)))
    failures = failed(records)
    critical = {key for key, r in failures.items() if r["critical"]}
    assert critical == {(suite, name)}
    line = failure_line(failures[(suite, name)])
    assert line.startswith(f"{suite}: {name}: observed ")
    assert ", expected " in line


def test_failing_rows_are_named_in_the_observed_value(good, tmp_path):
    records = run_checks(*collect(faulty_copy(good, tmp_path, "unknown label")))
    observed = failed(records)[("annotations", "labels are in classes.txt")]["observed"]
    assert observed.startswith("1 of 13 rows: annotations/train.csv:2 ('juggling')")


def test_truncated_shard_fails_reading_and_loses_its_clips(good, tmp_path):
    s = faulty_copy(good, tmp_path, "shard lost a clip")  # any copy; then cut a JPEG in half
    shard = s.shards_dir / "validate/validate-000000.tar"
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".000002.jpg"))
    shard.write_bytes(shard.read_bytes()[: member.offset_data + member.size // 2])
    failures = failed(run_checks(*collect(s)))
    assert set(failures) == {
        ("pixels", "shards read and sampled clips decode"),
        ("manifest", "ok clips are in their shard"),
    }
    assert failures[("pixels", "shards read and sampled clips decode")]["observed"].startswith(
        "1 of 10 rows: validate/validate-000000.tar: unexpected end of data"
    )


def test_missing_inputs_are_one_clear_error(good, tmp_path):
    shutil.copytree(good, tmp_path / "copy", ignore=shutil.ignore_patterns("reports"))
    (tmp_path / "copy/shards/manifest.csv").unlink()
    with pytest.raises(StageError, match="manifest not found; run python -m pipeline.preprocess"):
        collect(settings_for(tmp_path / "copy"))


def stage_overrides(s: Settings) -> list[str]:
    """The validate stage's command line for the dataset of ``s``."""
    return [
        f"data.root={s.root}",
        f"data.shards_dir={s.shards_dir}",
        f"data.short_side={HEIGHT}",
        f"data.fps={FPS}",
        "data.train_split=train",
        f"model.clip.num_frames={CLIP_NUM_FRAMES}",
        f"model.clip.stride={CLIP_STRIDE}",
        f"validate.report_dir={s.report_dir}",
        f"validate.min_clips_per_class={MIN_CLIPS}",
        "validate.pixel_clips_per_shard=100",
        "validate.max_missing_fraction=0.1",
    ]


def test_cli_exits_1_with_one_line_per_failure_and_writes_the_report(good, tmp_path):
    s = faulty_copy(good, tmp_path, "all-black frames")
    overrides = stage_overrides(s)
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "False"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.validate", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "WARNING pixels: mean brightness is plausible: observed 1 of 12 rows: "
        "train/train-000000.tar:tr0x0abcdef_000000_000003 (0.0), expected 5 <= mean <= 250",
        "FAILED pixels: frames are not constant (all-black or blank): observed 1 of 12 rows: "
        "train/train-000000.tar:tr0x0abcdef_000000_000003 (0.0), expected pixel std > 2.0",
    ]
    report = json.loads((s.report_dir / "summary.json").read_text())
    assert report["success"] is False
    assert (s.report_dir / "data_docs/index.html").is_file()
    page = (s.report_dir / "summary.html").read_text()
    assert '<span class="outcome failed">FAILED</span>' in page
    assert '<tr class="failed-critical"><td class="suite">pixels</td>' in page


def test_a_failed_non_critical_check_warns_and_the_stage_passes(good, tmp_path, capsys):
    from pipeline.validate import main

    base = tmp_path / "dark"
    shutil.copytree(good, base, ignore=shutil.ignore_patterns("reports"))
    rewrite_shard(base, "train", first_jpegs=jpegs(DARK))
    s = settings_for(base)
    assert main(stage_overrides(s)) == 0
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert line.startswith(
        "WARNING pixels: mean brightness is plausible: observed 1 of 12 rows: "
        "train/train-000000.tar:tr0x0abcdef_000000_000003 ("
    ) and line.endswith("), expected 5 <= mean <= 250"), line
    report = json.loads((s.report_dir / "summary.json").read_text())
    assert report["success"] is True
    [failure] = [e for e in report["expectations"] if not e["passed"]]
    assert (failure["suite"], failure["name"], failure["critical"]) == ("pixels", "mean brightness is plausible", False)
    total = len(report["expectations"])
    assert out.startswith(f"validate: {total - 1}/{total} expectations passed; report in {s.report_dir}/"), out


@pytest.mark.parametrize(
    ("fault", "override", "suite", "name", "passed"),
    [
        (None, "validate.max_missing_fraction=0.01", "manifest", "fraction of missing clips", False),  # 1 of 13
        (
            "too many failed",
            "validate.max_failed_fraction=0.5",
            "manifest",
            "fraction of failed clips",
            True,
        ),  # 3 of 13
        (None, "validate.min_clips_per_class=4", "train_classes", "every class has >= 4 ok clips in train", False),
    ],
    ids=["max_missing_fraction", "max_failed_fraction", "min_clips_per_class"],
)
def test_the_stage_checks_with_its_validate_settings(good, tmp_path, fault, override, suite, name, passed):
    """A threshold set on the command line decides its expectation (the other settings as in
    ``stage_overrides``, which the dataset passes), in the report under validate.report_dir."""
    from pipeline.validate import main

    s = faulty_copy(good, tmp_path, fault) if fault else settings_for(good)
    report_dir = tmp_path / "report"
    main([*stage_overrides(s), override, f"validate.report_dir={report_dir}"])
    records = json.loads((report_dir / "summary.json").read_text())["expectations"]
    [record] = [r for r in records if (r["suite"], r["name"]) == (suite, name)]
    assert record["passed"] is passed and override.split("=")[1] in record["threshold"], record


def test_validate_pixel_clips_per_shard_clips_of_each_shard_are_sampled_by_validate_seed(good):
    """``validate.pixel_clips_per_shard`` clips of each shard get their pixels checked, drawn
    with ``validate.seed``: the same seed draws the same clips, other seeds others."""
    from pipeline.core.config import load_config
    from pipeline.validate import settings_from

    def sampled(seed: int) -> list[str]:
        overrides = [*stage_overrides(settings_for(good)), "validate.pixel_clips_per_shard=1", f"validate.seed={seed}"]
        tables, _ = collect(settings_from(load_config(overrides)))
        return list(tables["pixels"]["row"])

    draws = [sampled(seed) for seed in range(4)]
    assert all(len(rows) == 2 for rows in draws)  # one clip of each of the 2 shards
    assert sampled(0) == draws[0] and len({tuple(rows) for rows in draws}) > 1
