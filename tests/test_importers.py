"""UCF-101 and HMDB-51 trees in their official layouts, with real mpeg4 ``.avi`` files, imported
into the Kinetics root that preprocess reads: classes, splits, odd file names, missing videos."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.importers import avi_seconds, clip_stem, import_dataset
from pipeline.data.kinetics import find_video, load_classes, read_annotations

from helpers import UCF_CLASSES, avi, ucf_tree

HMDB_CLASSES = ["brush_hair", "cartwheel"]
HMDB_ODD = "Bradley's_cartwheel_(hard!)_&_fast_f_cm_np1_ba_med_0.avi"  # HMDB has ! & ( ' in its names


def hmdb_tree(root: Path) -> Path:
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for label in HMDB_CLASSES:
        names = [f"{label}_a_0.avi", f"{label}_b_0.avi", f"{label}_c_0.avi"]
        if label == "cartwheel":
            names[0] = HMDB_ODD
        for name in names:
            avi(root / "videos" / label / name)
        rows = [f"{names[0]} 1", f"{names[1]} 2", f"{names[2]} 0"]  # train, test, unused
        (splits / f"{label}_test_split1.txt").write_text("\n".join(rows) + "\n")
    (root / "videos" / "cartwheel" / "cartwheel_b_0.avi").unlink()  # listed, never downloaded
    return root


def test_ucf101_becomes_a_kinetics_root_with_its_official_split(tmp_path: Path) -> None:
    src = ucf_tree(tmp_path / "ucf")
    summary = import_dataset("ucf101", src, tmp_path / "root", 1)
    root = tmp_path / "root"
    assert load_classes(root / "classes.txt") == UCF_CLASSES  # classInd.txt's order is the index
    annotations = read_annotations(root, UCF_CLASSES)
    train = sorted(a.youtube_id for a in annotations if a.split == "train")
    assert train == [f"v_{name}_g02_c01" for name in UCF_CLASSES]
    assert summary.clips == {"train": 3, "validate": 3} and summary.missing == 1
    found = {a.youtube_id: find_video(root, a) for a in annotations}
    assert found["v_Basketball_g01_c01"] is None  # counted missing by preprocess, as in Kinetics
    video = found["v_Archery_g01_c01"]
    assert video.read_bytes() == (src / "UCF-101/Archery/v_Archery_g01_c01.avi").read_bytes()
    # whole videos: 1.5 s rounded up; 1 s for the one whose header could not be read (it is missing)
    assert all(a.time_start == 0 and a.time_end == (2 if found[a.youtube_id] else 1) for a in annotations)


def test_hmdb51_keeps_its_train_and_test_rows_and_names_odd_files_safely(tmp_path: Path) -> None:
    summary = import_dataset("hmdb51", hmdb_tree(tmp_path / "hmdb"), tmp_path / "root", 1)
    root = tmp_path / "root"
    assert load_classes(root / "classes.txt") == HMDB_CLASSES
    annotations = read_annotations(root, HMDB_CLASSES)  # the ids pass Kinetics' own checks
    assert summary.clips == {"train": 2, "validate": 2} and summary.missing == 1  # the "0" rows are left out
    odd = next(a for a in annotations if a.youtube_id.startswith("Bradley"))
    assert odd.youtube_id == clip_stem(HMDB_ODD) and odd.split == "train"
    assert find_video(root, odd).read_bytes() == (tmp_path / "hmdb/videos/cartwheel" / HMDB_ODD).read_bytes()
    assert clip_stem("a!_0.avi") != clip_stem("a&_0.avi")  # replaced characters never make two ids one


def test_a_second_import_into_the_same_root_gives_the_same_files(tmp_path: Path) -> None:
    src = hmdb_tree(tmp_path / "hmdb")
    import_dataset("hmdb51", src, tmp_path / "root", 1)
    before = {p: p.read_bytes() for p in (tmp_path / "root").rglob("*") if p.is_file()}
    import_dataset("hmdb51", src, tmp_path / "root", 1)
    assert {p: p.read_bytes() for p in (tmp_path / "root").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "dataset, make, split, says",
    [
        ("ucf101", lambda p: p.mkdir(), 1, "is not UCF-101: no classInd.txt"),
        ("hmdb51", lambda p: p.mkdir(), 1, "is not HMDB-51: no *_test_split1.txt"),
        ("ucf101", lambda p: None, 1, "is not a folder"),
        ("ucf101", lambda p: p.mkdir(), 4, "the official splits are 1, 2 and 3"),
        ("kinetics", lambda p: p.mkdir(), 1, "unknown dataset 'kinetics'"),
    ],
)
def test_a_source_that_is_not_the_dataset_is_one_line(tmp_path: Path, dataset, make, split, says) -> None:
    make(tmp_path / "src")
    with pytest.raises(Exception) as raised:
        import_dataset(dataset, tmp_path / "src", tmp_path / "root", split)
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "root").exists()


def test_avi_seconds_reads_the_main_header(tmp_path: Path) -> None:
    assert avi_seconds(avi(tmp_path / "three.avi", seconds=2.2)) == 3
    (tmp_path / "not.avi").write_bytes(b"not a RIFF file at all" * 4)
    assert avi_seconds(tmp_path / "not.avi") == 1
