"""The ablation runner's bookkeeping: per-run overrides, the summary table, the written outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.ablation import RunResult, markdown_table, run_overrides, summarise, write_outputs
from pipeline.core.config import load_config


def result(label: str, seed: int, top1: float, kind_top1: dict[str, float] | None = None) -> RunResult:
    return RunResult(label, "tiny_a2", seed, top1, top1 / 2, 63_500, 0.103, 200.0 + seed, kind_top1 or {})


def test_run_overrides_compose_into_a_private_run(tmp_path: Path) -> None:
    variant = OmegaConf.create({"label": "tiny + 2 A² blocks", "model": "tiny_a2", "net": {"num_attention": 2}})
    overrides = run_overrides(variant, 1, tmp_path, "abl")
    cfg = load_config(overrides)
    assert cfg.model.net.name == "tiny_a2" and cfg.model.net.num_attention == 2
    assert cfg.train.seed == 1 and cfg.mlflow.experiment == "abl"
    assert Path(cfg.train.out_dir) == tmp_path / "tiny-2-a-blocks-seed1"
    assert Path(cfg.train.metrics_csv).parent == Path(cfg.train.out_dir)


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    rows = summarise([result("a", 0, 0.5), result("b", 0, 0.25), result("a", 1, 0.7), result("a", 2, 0.6)])
    assert [row["variant"] for row in rows] == ["a", "b"]
    assert rows[0]["seeds"] == 3
    assert rows[0]["video_top1"] == pytest.approx((0.6, 0.1))  # mean, sample std
    assert rows[1]["video_top1"] == (0.25, 0.0)
    assert rows[0]["step_ms"] == 201.0
    assert markdown_table(rows, chance=0.25).splitlines() == [
        "| variant | video top-1 (mean ± std) | seeds | params (k) | GMACs / clip | train step (ms) |",
        "|---|---|---|---|---|---|",
        "| a | 60.0 ± 10.0 % | 3 | 63.5 | 0.103 | 201 |",
        "| b | 25.0 ± 0.0 % | 1 | 63.5 | 0.103 | 200 |",
        "",
        "Chance is 25 %.",
    ]


def test_each_kind_gets_its_mean_and_std_column_and_its_csv_column(tmp_path: Path) -> None:
    results = [
        result("a", 0, 0.6, {"spatial": 0.8, "temporal": 0.4}),
        result("a", 1, 0.7, {"spatial": 1.0, "temporal": 0.4}),
        result("b", 0, 0.5, {"spatial": 0.5, "temporal": 0.5}),
    ]
    rows = summarise(results)
    assert rows[0]["video_top1_spatial"] == pytest.approx((0.9, 0.02**0.5))  # sample std of 0.8, 1.0
    assert rows[0]["video_top1_temporal"] == pytest.approx((0.4, 0.0))
    table = write_outputs(results, num_classes=4, out_dir=tmp_path, measured_on="Measured on x.")
    assert table.splitlines()[:3] == [
        "| variant | video top-1 (mean ± std) | spatial clips | temporal clips | seeds | params (k) | GMACs / clip "
        "| train step (ms) |",
        "|---|---|---|---|---|---|---|---|",
        "| a | 65.0 ± 7.1 % | 90.0 ± 14.1 % | 40.0 ± 0.0 % | 2 | 63.5 | 0.103 | 200 |",
    ]
    assert (tmp_path / "results.md").read_text() == table + "\n\nMeasured on x.\n"
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["video_top1_spatial"], r["video_top1_temporal"]) for r in rows] == [
        ("0.8", "0.4"),
        ("1.0", "0.4"),
        ("0.5", "0.5"),
    ]


def test_outputs_are_written(tmp_path: Path) -> None:
    results = [result("a", seed, 0.3 + 0.1 * seed) for seed in range(3)]
    table = write_outputs(results, num_classes=4, out_dir=tmp_path)
    assert (tmp_path / "results.md").read_text() == table + "\n"
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["video_top1"]) for row in rows] == pytest.approx([0.3, 0.4, 0.5])
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_plot_shows_each_variant_s_mean_every_seed_and_chance(tmp_path: Path, monkeypatch) -> None:
    """The figure's data (not its styling): a bar per variant at its mean, a dot per seed at its
    top-1, the chance line at 100 / num_classes, on a 0–100 % axis."""
    from matplotlib.figure import Figure

    figures = []

    def keep(figure: Figure, path, **_) -> None:
        figures.append(figure)
        Path(path).write_bytes(b"")

    monkeypatch.setattr(Figure, "savefig", keep)
    results = [result("a", 0, 0.5), result("b", 0, 0.25), result("a", 1, 0.7)]
    write_outputs(results, num_classes=4, out_dir=tmp_path)
    [axes] = figures[0].axes
    assert [bar.get_height() for bar in axes.patches] == pytest.approx([60, 25])
    dots = [(list(line.get_xdata()), list(line.get_ydata())) for line in axes.lines if line.get_marker() == "o"]
    assert dots == [([0, 0], pytest.approx([50, 70])), ([1], pytest.approx([25]))]
    [chance] = [line for line in axes.lines if line.get_label() == "chance"]
    assert list(chance.get_ydata()) == pytest.approx([25, 25]) and axes.get_ylim() == (0, 100)
