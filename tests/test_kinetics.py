"""Kinetics annotation reader: real CSV files on disk, the canonical class list, both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import StageError
from pipeline.data.kinetics import (
    Annotation,
    AnnotationError,
    find_video,
    load_classes,
    quote_label,
    read_annotations,
)

from helpers import ANNOTATIONS_HEADER as HEADER
from helpers import write_annotations

CANONICAL_CLASSES = Path(__file__).resolve().parents[1] / "pipeline/resources/kinetics400_classes.txt"
CLASSES = ["abseiling", "skiing (not slalom or crosscountry)", "dancing, waltz", "air drumming"]


def make_root(tmp_path: Path, files: dict[str, str]) -> Path:
    """A dataset root with classes.txt (``CLASSES``) and the given annotations/<name> contents."""
    return write_annotations(tmp_path, CLASSES, files)


def test_canonical_class_list_keeps_the_skiing_order() -> None:
    classes = load_classes(CANONICAL_CLASSES)
    assert len(classes) == 400
    assert classes[0] == "abseiling"
    assert classes[308] == "skiing (not slalom or crosscountry)"
    assert classes[309] == "skiing crosscountry"
    assert classes[310] == "skiing slalom"
    # the order differs from sorted folder names with underscores, the classic 308/309 bug
    assert sorted(c.replace(" ", "_").replace("(", "").replace(")", "") for c in classes)[308] == (
        "skiing_crosscountry"
    )


def test_reads_quoted_labels_leading_dash_ids_and_all_files(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "validate.csv": HEADER + "air drumming,-abcDEF_123,5,15,validate,0\n",
            "train.csv": HEADER
            + '"skiing (not slalom or crosscountry)",--x_y-z0123,0,10,train,1\n'
            + '"dancing, waltz",AbC-dEf_gHi,12,22,train,0\n',
        },
    )
    anns = read_annotations(root, CLASSES)
    assert anns == [
        Annotation("skiing (not slalom or crosscountry)", 1, "--x_y-z0123", 0, 10, "train", "annotations/train.csv:2"),
        Annotation("dancing, waltz", 2, "AbC-dEf_gHi", 12, 22, "train", "annotations/train.csv:3"),
        Annotation("air drumming", 3, "-abcDEF_123", 5, 15, "validate", "annotations/validate.csv:2"),
    ]
    assert anns[0].clip_id == "--x_y-z0123_000000_000010"


@pytest.mark.parametrize(
    ("label", "field"),
    [
        ("abseiling", "abseiling"),
        ("air drumming", '"air drumming"'),
        ("skiing (not slalom or crosscountry)", '"skiing (not slalom or crosscountry)"'),
        ('say "cheese", twice', '"say ""cheese"", twice"'),
    ],
)
def test_a_label_is_written_as_the_kinetics_csvs_write_it_and_reads_back(tmp_path: Path, label, field) -> None:
    """Plain labels bare, labels with spaces, commas, quotes or brackets quoted (quotes doubled)."""
    assert quote_label(label) == field
    root = make_root(tmp_path, {"train.csv": HEADER + f"{field},abcdefghijk,0,10,train,0\n"})
    assert [a.label for a in read_annotations(root, [label])] == [label]


def test_is_cc_column_is_optional_and_end_before_start_is_parsed(tmp_path: Path) -> None:
    root = make_root(
        tmp_path, {"train.csv": "label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,20,10,train\n"}
    )
    (ann,) = read_annotations(root, CLASSES)
    assert (ann.time_start, ann.time_end) == (20, 10)


@pytest.mark.parametrize(
    ("kind", "read"), [("temporal", "temporal"), (" spatial ", "spatial"), ("", ""), ("Temporal", None), ("a b", None)]
)
def test_the_optional_kind_column_is_read_and_must_be_a_lower_case_word(tmp_path: Path, kind: str, read) -> None:
    root = make_root(tmp_path, {"train.csv": HEADER.rstrip() + f",kind\nabseiling,aaaaaaaaaaa,0,10,train,0,{kind}\n"})
    if read is None:
        with pytest.raises(AnnotationError, match=rf"train\.csv:2: kind '{kind}' is not a lower-case word"):
            read_annotations(root, CLASSES)
        return
    (ann,) = read_annotations(root, CLASSES)
    assert ann.kind == read
    plain = make_root(tmp_path / "plain", {"train.csv": HEADER + "abseiling,aaaaaaaaaaa,0,10,train,0\n"})
    assert read_annotations(plain, CLASSES)[0].kind == ""  # no column: no kind


def test_unlabelled_test_rows_are_skipped(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        {
            "test.csv": "youtube_id,time_start,time_end,split\naaaaaaaaaaa,0,10,test\n",
            "test2.csv": HEADER + ",bbbbbbbbbbb,0,10,test,0\nabseiling,ccccccccccc,0,10,test,0\n",
        },
    )
    assert [a.youtube_id for a in read_annotations(root, CLASSES)] == ["ccccccccccc"]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("swimming,aaaaaaaaaaa,0,10,train,0", "not in the class list"),
        (",aaaaaaaaaaa,0,10,train,0", "label is empty"),
        ("dancing, waltz,aaaaaaaaaaa,0,10,train,0", "7 columns but the header has 6"),
        ("abseiling,aaaaaaaaaaa,0,10", "4 columns"),
        ("abseiling,aaaaaaaaaaa,0.5,10,train,0", "time_start '0.5'"),
        ("abseiling,aaaaaaaaaaa,0,ten,train,0", "time_end 'ten'"),
        ("abseiling,aaaaaaaaaaa,-3,10,train,0", "time_start '-3'"),
        ("abseiling,..,0,10,train,0", "youtube_id '..'"),
        ("abseiling,../../etc,0,10,train,0", "would leave the dataset root"),
        ("abseiling,a\\b,0,10,train,0", "would leave the dataset root"),
        ("abseiling,,0,10,train,0", "youtube_id ''"),
        ("abseiling,aaaaaaaaaaa,0,10,../x,0", "split '../x'"),
        (
            "abseiling,aaaa.aaaaaa,0,10,train,0",
            "youtube_id 'aaaa.aaaaaa' has characters outside A-Z a-z 0-9 _ - (YouTube's id alphabet; "
            "a '.' would break the clip's shard key); fix the row",
        ),
        ("abseiling,aaaa aaaaaa,0,10,train,0", "youtube_id 'aaaa aaaaaa' has characters outside"),
        ("abseiling,aaaaaaaaaaa,1_26,130,train,0", "time_start '1_26'"),
        ("abseiling,aaaaaaaaaaa,١٢٦,130,train,0", "time_start '١٢٦'"),
        ('abseiling,aaaaaaaaaaa," 126 ",130,train,0', "time_start ' 126 '"),
        ("abseiling,aaaaaaaaaaa,+5,10,train,0", "time_start '+5'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, problem: str) -> None:
    root = make_root(tmp_path, {"train.csv": HEADER + "abseiling,okokokokoko,0,10,train,0\n" + row + "\n"})
    with pytest.raises(AnnotationError, match=r"train\.csv:3: ") as err:
        read_annotations(root, CLASSES)
    assert problem in str(err.value)
    assert isinstance(err.value, StageError)


def test_missing_header_columns_and_missing_files(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"train.csv": "label,youtube_id,start,end,split\n"})
    with pytest.raises(AnnotationError, match=r"train\.csv:1: header lacks column\(s\) time_start, time_end"):
        read_annotations(root, CLASSES)
    with pytest.raises(AnnotationError, match="no \\*.csv annotation files"):
        read_annotations(tmp_path / "nowhere", CLASSES)


def test_class_list_errors(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(AnnotationError, match=r"classes\.txt:3: class 'a' repeats line 1"):
        load_classes(path)
    path.write_text("a\n\nb\n")
    with pytest.raises(AnnotationError, match=r"classes\.txt:2: "):
        load_classes(path)
    path.write_text("a\nb\n\n")
    assert load_classes(path) == ["a", "b"]
    with pytest.raises(AnnotationError, match="class list not found"):
        load_classes(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "relative",
    [
        "videos/train/dancing, waltz/-abc_000001_000011.mp4",
        "videos/train/dancing,_waltz/-abc_000001_000011.webm",
        "videos/train/-abc_000001_000011.mkv",
    ],
)
def test_find_video_in_both_layouts(tmp_path: Path, relative: str) -> None:
    ann = Annotation("dancing, waltz", 2, "-abc", 1, 11, "train", "annotations/train.csv:2")
    assert find_video(tmp_path, ann) is None
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(b"video")
    assert find_video(tmp_path, ann) == path
    other_split = Annotation("dancing, waltz", 2, "-abc", 1, 11, "validate", "x:1")
    assert find_video(tmp_path, other_split) is None


BAD_INPUTS = {  # name: (write the bad thing into a root, what the one line says)
    "label not in the class list": (
        lambda root: (root / "annotations/train.csv").write_text(HEADER + "swimming,aaaaaaaaaaa,0,10,train,0\n"),
        "not in the class list",
    ),
    "dot in youtube_id": (
        lambda root: (root / "annotations/train.csv").write_text(HEADER + "abseiling,a.b,0,10,train,0\n"),
        "youtube_id 'a.b' has characters outside",
    ),
    "time with an underscore": (
        lambda root: (root / "annotations/train.csv").write_text(HEADER + "abseiling,abc,1_26,30,train,0\n"),
        "time_start '1_26'",
    ),
    "not UTF-8": (
        lambda root: (root / "annotations/train.csv").write_bytes(
            HEADER.encode() + b"abseiling,\xff\xfe,0,1,train,0\n"
        ),
        "not UTF-8 text",
    ),
    "a directory named like a CSV": (lambda root: (root / "annotations/train.csv").mkdir(), "not a file"),
    "too many columns": (
        lambda root: (root / "annotations/train.csv").write_text(HEADER + "abseiling,abc,0,1,train,0,extra\n"),
        "7 columns but the header has 6",
    ),
    "no class list": (lambda root: (root / "classes.txt").unlink(), "class list not found"),
    "class list with a blank line": (
        lambda root: (root / "classes.txt").write_text("abseiling\n\nzumba\n"),
        "is empty",
    ),
    "header without times": (
        lambda root: (root / "annotations/train.csv").write_text("label,youtube_id,split\n"),
        "header lacks column",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_annotations_stop_preprocess_in_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, case) -> None:
    from pipeline.preprocess import main

    write_bad, says = BAD_INPUTS[case]
    (tmp_path / "root").mkdir()
    root = make_root(tmp_path / "root", {})
    write_bad(root)
    monkeypatch.chdir(tmp_path)
    assert main([f"data.root={root}", "data.shards_dir=shards", "data.workers=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "shards").exists()


def test_an_unwritable_shards_dir_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from pipeline.preprocess import main

    (tmp_path / "root").mkdir()
    root = make_root(tmp_path / "root", {"train.csv": HEADER + "abseiling,abc,0,1,train,0\n"})
    (tmp_path / "file").write_text("a file where a folder should be")
    monkeypatch.chdir(tmp_path)
    assert main([f"data.root={root}", f"data.shards_dir={tmp_path / 'file' / 'shards'}", "data.workers=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'file' / 'shards'}") and err.count("\n") == 1, err
