"""The evaluate stage: multi-view scoring maths, 3-crop geometry, and train → evaluate end to end."""

from __future__ import annotations

import csv
import json
import shutil

import mlflow
import pytest
import torch

from pipeline import evaluate as evaluate_stage
from pipeline import train as train_stage
from pipeline.data.transforms import TestTransform
from pipeline.evaluation.examples import figure_name, first_per_class
from pipeline.evaluation.meters import Evaluation, topk_accuracy
from pipeline.evaluation.reports import per_class_csv
from pipeline.runtime.checkpoint import Checkpoint

from helpers import read_manifest, run_stage, tiny_overrides


def test_video_scores_sum_the_softmax_of_views_and_clip_accuracy_counts_each_view():
    # 2 videos × 2 views × 3 classes: one view of each video is wrong, the summed scores are right
    view_scores = torch.tensor(
        [
            [[0.9, 0.1, 0.0], [0.3, 0.4, 0.3]],
            [[0.2, 0.5, 0.3], [0.1, 0.2, 0.7]],
        ]
    )
    result = Evaluation(["a", "b", "c"], view_scores, torch.tensor([0, 2]))
    metrics = result.metrics()
    assert metrics["clip_top1"] == 0.5
    assert torch.allclose(result.video_scores, torch.tensor([[1.2, 0.5, 0.3], [0.3, 0.7, 1.0]]))
    assert metrics["video_top1"] == 1.0
    assert metrics["video_top5"] == 1.0 and metrics["clip_top5"] == 1.0  # k clamped to 3 classes
    assert result.confusion().tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert result.per_class_top1() == {"a": 1.0, "c": 1.0}  # b has no videos


def test_per_class_csv_lists_classes_with_videos_by_index_for_the_bar_plot():
    # 4 videos of classes 0 and 2 (class 1 has none); the first video of class 2 is wrong
    scores = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    classes = ["abseiling", "air drumming", "same colour, moving up"]  # a comma: the field is quoted
    result = Evaluation(classes, scores[:, None], torch.tensor([0, 2, 2, 2]))
    text = per_class_csv(result)
    assert text.splitlines()[2] == '2,"same colour, moving up",0.666667'
    rows = list(csv.DictReader(text.splitlines()))
    assert rows == [
        {"class_index": "0", "class": "abseiling", "video_top1": "1"},
        {"class_index": "2", "class": "same colour, moving up", "video_top1": "0.666667"},
    ]


def one_hot(predicted: list[int], k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), k).float()[:, None]  # (N, 1 view, K)


@pytest.mark.parametrize(
    ("labels", "predicted", "mean_class_accuracy", "macro_precision"),
    [
        ([0, 0, 0, 1], [0, 0, 0, 1], 1.0, 1.0),
        # class 0: 3 of 3, class 1: 0 of 1 → mean 0.5 (top-1 is 0.75); precision: 3/4 and 0/0 → 0
        ([0, 0, 0, 1], [0, 0, 0, 0], 0.5, (3 / 4 + 0) / 2),
        # class 2 has no videos: it counts in neither mean, though it is predicted once
        ([0, 1, 1, 1], [0, 1, 2, 1], (1 + 2 / 3) / 2, (1 + 1) / 2),
    ],
)
def test_mean_class_accuracy_and_macro_precision_weigh_every_class_alike(
    labels, predicted, mean_class_accuracy, macro_precision
) -> None:
    metrics = Evaluation(["a", "b", "c"], one_hot(predicted, 3), torch.tensor(labels)).class_metrics()
    assert metrics["mean_class_accuracy"] == pytest.approx(mean_class_accuracy)
    assert metrics["macro_recall"] == metrics["mean_class_accuracy"]  # recall per class is its accuracy
    assert metrics["macro_precision"] == pytest.approx(macro_precision)


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((), {}),  # data without kinds: an empty table
        (("", "", "", ""), {}),
        # videos 0 and 3 are wrong: spatial 1 of 2, temporal 1 of 2
        (("spatial", "temporal", "spatial", "temporal"), {"video_top1_spatial": 0.5, "video_top1_temporal": 0.5}),
        (("spatial", "spatial", "spatial", "temporal"), {"video_top1_spatial": 2 / 3, "video_top1_temporal": 0.0}),
        (("a", "b", "", "b"), {"video_top1_a": 0.0, "video_top1_b": 0.5}),  # unrecorded kinds count in neither
    ],
)
def test_kind_metrics_score_the_videos_of_each_kind_apart(kinds, expected) -> None:
    result = Evaluation(["a", "b"], one_hot([1, 1, 0, 0], 2), torch.tensor([0, 1, 0, 1]), kinds=kinds)
    assert result.kind_metrics() == pytest.approx(expected)


def test_topk_accuracy_counts_the_label_among_the_k_best():
    scores = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 5) == 1.0


@pytest.mark.parametrize(("height", "width"), [(40, 64), (64, 40)])
def test_three_crops_are_first_centre_last_along_the_long_side(height, width):
    frames = torch.randint(0, 256, (2, 3, 3, height, width), dtype=torch.uint8)  # (V, T, C, H, W)
    crops = TestTransform(40, num_crops=3)(frames)
    assert crops.shape == (6, 3, 3, 40, 40)
    clip = frames[1].permute(1, 0, 2, 3)  # (C, T, H, W)
    starts = [0, 12, 24]
    for k, start in enumerate(starts):
        expected = clip[..., start : start + 40] if width > height else clip[..., start : start + 40, :]
        assert torch.equal(crops[3 + k], expected)
    assert torch.equal(TestTransform(40, num_crops=1)(frames)[1], crops[4])  # one crop = the centre


def test_train_then_evaluate_writes_metrics_plots_and_logs_to_the_training_run(training_data, workdir):
    argv = tiny_overrides(training_data, workdir, "eval.num_clips=2", "eval.num_crops=3", "eval.batch_size=12")
    assert train_stage.main(argv) == 0
    assert evaluate_stage.main(argv) == 0

    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in ("video_top1", "video_top5", "clip_top1", "clip_top5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["video_top5"] == 1.0  # 3 classes: top-5 is clamped to top-3
    assert metrics["num_videos"] == 2 and metrics["views_per_video"] == 6
    per_class = json.loads((workdir / "per_class.json").read_text())
    assert set(per_class) == {"abseiling", "air drumming"}  # the classes with validation videos
    with open(workdir / "plots/per_class.csv", newline="") as f:
        per_class_rows = {r["class"]: float(r["video_top1"]) for r in csv.DictReader(f)}
    assert per_class_rows == pytest.approx(per_class, abs=1e-6)  # the JSON's numbers, as the DVC plot
    with open(workdir / "plots/predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["actual"] for r in rows) == ["abseiling", "air drumming"]
    assert all(r["predicted"] in ("abseiling", "air drumming", "zumba") for r in rows)
    assert (workdir / "plots/confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run = mlflow.get_run((workdir / "model/run_id.txt").read_text().strip())
    assert run.data.metrics["video_top1"] == metrics["video_top1"]
    assert "num_videos" not in run.data.metrics and run.data.tags["eval.num_videos"] == "2"  # a count: a tag
    assert "train_loss" in run.data.metrics  # the same run as training
    client = mlflow.tracking.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/per_class.json", "evaluation/per_class.csv"} <= artifacts
    # tiny_a2: one attention figure per class with validation videos (abseiling = 0, air drumming = 1)
    figures = sorted(p.name for p in (workdir / "plots/attention").iterdir())
    assert figures == ["000_abseiling.png", "001_air_drumming.png"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/attention")}
    assert logged == {f"evaluation/attention/{name}" for name in figures}


class FirstViewShouts(torch.nn.Module):
    """Logits for (N·V, C, T, H, W) views, view-major per video: the first view of each video says
    class 0 with a huge logit, the others class 1 confidently. Summed softmax scores pick class 1;
    summed logits would pick class 0."""

    def __init__(self, views: int) -> None:
        super().__init__()
        self.views = views

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.0, 5.0, 0.0]).repeat(len(clips), 1)
        logits[:: self.views] = torch.tensor([40.0, 0.0, 0.0])  # more than the 5 × 5 of the others
        return logits


def test_videos_are_predicted_from_their_views_summed_softmax_not_their_logits(training_data, workdir, monkeypatch):
    from pipeline.runtime.checkpoint import Checkpoint

    argv = tiny_overrides(training_data, workdir, "train.epochs=1", "eval.num_clips=2", "eval.num_crops=3")
    assert train_stage.main(argv) == 0
    monkeypatch.setattr(Checkpoint, "build_net", lambda self, source: FirstViewShouts(views=6))
    assert evaluate_stage.main(argv) == 0
    with open(workdir / "plots/predictions.csv", newline="") as f:
        assert {row["predicted"] for row in csv.DictReader(f)} == {"air drumming"}  # class 1
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["clip_top1"] == pytest.approx(metrics["video_top1"] * 5 / 6 + (1 - metrics["video_top1"]) / 6)


def test_missing_checkpoint_is_one_clear_line(training_data, workdir, capsys):
    argv = tiny_overrides(training_data, workdir, f"train.out_dir={workdir / 'never-trained'}")
    assert evaluate_stage.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint ") and "never-trained/last.pt not found" in err and "\n" not in err


@pytest.mark.parametrize(
    "labels, max_classes, expected",
    [
        ([2, 0, 0, 1, 2], 8, {0: 1, 1: 3, 2: 0}),  # the first video of each class, by class index
        ([2, 0, 0, 1, 2], 2, {0: 1, 1: 3}),  # the lowest max_classes labels
        ([3, 3], 8, {3: 0}),  # classes without validation videos are skipped
        ([], 8, {}),
    ],
)
def test_attention_examples_are_the_first_validation_video_of_each_class(labels, max_classes, expected):
    assert first_per_class(labels, max_classes) == expected


@pytest.mark.parametrize(
    "labels, kinds, expected",
    [
        # classes 0, 1, 2 take spatial, temporal, spatial in turn
        ([0, 0, 1, 1, 2, 2], ["temporal", "spatial", "spatial", "temporal", "temporal", "spatial"], {0: 1, 1: 3, 2: 5}),
        ([0, 1, 1], ["temporal", "spatial", "spatial"], {0: 0, 1: 1}),  # 0 has no spatial, 1 no temporal: first
        ([0, 1], ["", ""], {0: 0, 1: 1}),  # no recorded kinds: the first video
    ],
)
def test_attention_examples_take_the_recorded_kinds_in_turn(labels, kinds, expected):
    assert first_per_class(labels, 8, kinds) == expected


def test_attention_figure_names_sort_by_class_and_are_safe_file_names():
    assert figure_name(3, "different colours (hues 90+ degrees apart), moving vertically") == (
        "003_different_colours_hues_90_degrees_apart_moving_vertically.png"
    )
    assert figure_name(12, "Air drumming") == "012_air_drumming.png"


# ------------------------------------------------- the eval settings, on one trained checkpoint


def test_evaluate_scores_every_video_of_data_val_split_in_its_views(training_data, trained, workdir):
    """data.val_split=train: the 8 training videos, each seen as eval.num_clips × eval.num_crops = 1 view."""
    argv = tiny_overrides(
        training_data,
        workdir,
        f"train.out_dir={trained}",
        "data.val_split=train",
        "eval.num_clips=1",
        "eval.num_crops=1",
        "eval.attention_classes=0",  # no figures: faster, and not what this test is about
    )
    assert evaluate_stage.main(argv) == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_videos"] == 8 and metrics["views_per_video"] == 1
    with open(workdir / "plots/predictions.csv", newline="") as f:
        actual = sorted(row["actual"] for row in csv.DictReader(f))
    manifest = read_manifest(training_data[1]).values()
    assert actual == sorted(r["label"] for r in manifest if r["split"] == "train" and r["status"] == "ok")


def test_annotation_kinds_reach_the_manifest_the_shards_and_kind_metrics(training_data, trained, workdir, tmp_path):
    """A ``kind`` column in the CSV: preprocess keeps it in the manifest and the clips' records, and
    evaluate scores each kind apart (kind_metrics.json and the MLflow run) from the same predictions."""
    root, shards = tmp_path / "root", tmp_path / "shards"
    shutil.copytree(training_data[0], root)
    lines = (root / "annotations/train.csv").read_text().splitlines()
    kinds = [("spatial", "temporal")[i % 2] for i in range(len(lines) - 1)]
    rows = [f"{lines[0]},kind"] + [f"{line},{kind}" for line, kind in zip(lines[1:], kinds)]
    (root / "annotations/train.csv").write_text("\n".join(rows) + "\n")
    run_stage(root, shards, samples_per_shard=3)
    manifest = [r for r in read_manifest(shards).values() if r["split"] == "train"]
    assert [r["kind"] for r in manifest] == kinds
    argv = tiny_overrides(
        (root, shards),
        workdir,
        f"train.out_dir={trained}",
        "data.val_split=train",
        "eval.num_clips=1",
        "eval.num_crops=1",
        "eval.attention_classes=0",
    )
    assert evaluate_stage.main(argv) == 0
    with open(workdir / "plots/predictions.csv", newline="") as f:  # videos in shard (= manifest) order
        correct = [r["actual"] == r["predicted"] for r in csv.DictReader(f)]
    ok_kinds = [r["kind"] for r in manifest if r["status"] == "ok"]
    expected = {
        f"video_top1_{kind}": sum(c for c, k in zip(correct, ok_kinds, strict=True) if k == kind) / ok_kinds.count(kind)
        for kind in ("spatial", "temporal")
    }
    assert json.loads((workdir / "kind_metrics.json").read_text()) == pytest.approx(expected)
    run = mlflow.get_run((trained / "run_id.txt").read_text().strip())
    assert run.data.metrics["video_top1_temporal"] == pytest.approx(expected["video_top1_temporal"])


def test_evaluate_tests_on_crops_of_eval_crop_size(training_data, trained, workdir, monkeypatch):
    """A 32² training crop tested on 48² crops (short side resized to 48): the net sees 48², the
    record says 48, so the score compares only with other 48² tests."""
    argv = tiny_overrides(
        training_data, workdir, f"train.out_dir={trained}", "eval.crop_size=48", "eval.attention_classes=0"
    )
    seen: list[tuple[int, ...]] = []
    original = Checkpoint.trained_net

    def spied(self, *args, **kwargs):
        network = original(self, *args, **kwargs)
        network.net.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape[-2:])))
        return network

    monkeypatch.setattr(Checkpoint, "trained_net", spied)
    assert evaluate_stage.main(argv) == 0
    assert seen and set(seen) == {(48, 48)}
    record = json.loads((workdir / "evaluation.json").read_text())
    assert record["setting"]["crop_size"] == 48


class CountsViews(torch.nn.Module):
    """Logits of zeros; records how many views each forward pass got."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(clips))
        return torch.zeros(len(clips), 3)


def test_evaluate_forwards_at_most_eval_batch_size_views_at_once(training_data, trained, workdir, monkeypatch):
    """eval.batch_size=6 with 2 × 3 views per video: one video per forward pass (16 would take both)."""
    from pipeline.runtime.checkpoint import Checkpoint

    net = CountsViews()
    monkeypatch.setattr(Checkpoint, "build_net", lambda self, source: net)
    argv = tiny_overrides(
        training_data, workdir, f"train.out_dir={trained}", "eval.num_clips=2", "eval.num_crops=3", "eval.batch_size=6"
    )
    assert evaluate_stage.main(argv) == 0
    assert net.batches == [6, 6]  # the 2 validation videos


def test_evaluate_draws_eval_attention_classes_figures_and_writes_where_the_eval_paths_say(
    training_data, trained, workdir
):
    """eval.attention_classes=1: the figure of the first class only; the reports go to
    eval.metrics_file, eval.per_class_file and eval.plots_dir, nowhere else."""
    out = workdir / "elsewhere"
    argv = tiny_overrides(
        training_data,
        workdir,
        f"train.out_dir={trained}",
        "eval.attention_classes=1",
        f"eval.metrics_file={out / 'scores.json'}",
        f"eval.per_class_file={out / 'classes.json'}",
        f"eval.plots_dir={out / 'figures'}",
    )
    assert evaluate_stage.main(argv) == 0
    assert sorted(p.name for p in (out / "figures/attention").iterdir()) == ["000_abseiling.png"]
    assert json.loads((out / "scores.json").read_text())["num_videos"] == 2
    assert set(json.loads((out / "classes.json").read_text())) == {"abseiling", "air drumming"}
    assert {"per_class.csv", "predictions.csv", "confusion.png"} <= {p.name for p in (out / "figures").iterdir()}
    assert sorted(p.name for p in workdir.iterdir()) == ["elsewhere"]  # not tiny_overrides' paths
