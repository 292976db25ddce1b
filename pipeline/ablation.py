"""The paper's ablation in miniature: ``python -m pipeline.ablation [key=value ...]`` (``make ablation``).

Trains every ``ablation.variants`` model for every ``ablation.seeds`` seed with the same schedule
(the default ``train`` group) on the same shards, tests each with the evaluate stage's multi-view
protocol, and writes ``<ablation.out_dir>/results.csv`` (one row per run), ``results.md`` (video
top-1 mean ± std per variant, overall and per annotation kind — the synthetic set's spatial and
temporal clips —, params, GMACs, train step time, and the data's DVC hash and the commit it was
measured at) and ``ablation.png``. Runs are logged to the MLflow experiment ``ablation.experiment``
so they can be compared in the UI.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from a2model import count_macs, count_params
from pipeline.core.config import classes_file, load_config, stage_main
from pipeline.core.files import atomic_path, write_atomic
from pipeline.data.kinetics import load_classes
from pipeline.data.provenance import data_fingerprint
from pipeline.evaluation.multiview import evaluate_plan, load_trained
from pipeline.runtime.checkpoint import Checkpoint
from pipeline.settings import eval_plan, train_settings
from pipeline.tracking.store import git_commit
from pipeline.training.fit import train


@dataclass(frozen=True)
class RunResult:
    """One trained and tested model of the ablation."""

    label: str
    model: str
    seed: int
    video_top1: float
    clip_top1: float
    params: int
    gmacs: float
    step_ms: float
    kind_top1: dict[str, float] = field(default_factory=dict)  # video top-1 per annotation kind

    def csv_row(self) -> dict[str, object]:
        """The run as one CSV row: its fields, ``kind_top1`` as ``video_top1_<kind>`` columns."""
        row = {k: v for k, v in asdict(self).items() if k != "kind_top1"}
        return row | {f"video_top1_{kind}": top1 for kind, top1 in self.kind_top1.items()}


def run_overrides(variant: DictConfig, seed: int, work_dir: Path, experiment: str) -> list[str]:
    """The config overrides of one (variant, seed) run: its model, seed and private output paths."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(variant.label).lower()).strip("-")
    out_dir = work_dir / f"{slug}-seed{seed}"
    overrides = [
        f"model={variant.model}",
        f"train.seed={seed}",
        f"train.out_dir={out_dir}",
        f"train.metrics_csv={out_dir}/train_metrics.csv",
        f"mlflow.experiment={experiment}",
    ]
    overrides += [f"+model.net.{key}={value}" for key, value in (variant.get("net") or {}).items()]
    return overrides


def train_and_test(cfg: DictConfig, label: str) -> RunResult:
    """Train ``cfg`` and test it with the evaluate stage's multi-view protocol (the library's cores)."""
    settings, plan = train_settings(cfg), eval_plan(cfg)
    checkpoint_path = train(settings)
    trained = load_trained(plan)
    result = evaluate_plan(plan, trained)
    metrics = result.metrics()
    history = Checkpoint.load(checkpoint_path).history
    clips_per_s = statistics.median(row["clips_per_s"] for row in history)
    net, clip = trained.net.cpu(), settings.model.clip
    return RunResult(
        label=label,
        model=settings.model.name,
        seed=settings.seed,
        video_top1=metrics["video_top1"],
        clip_top1=metrics["clip_top1"],
        params=count_params(net),
        gmacs=count_macs(net, (1, 3, clip.num_frames, clip.crop_size, clip.crop_size)) / 1e9,
        step_ms=1e3 * settings.schedule.batch_size / clips_per_s,
        kind_top1={k.removeprefix("video_top1_"): v for k, v in result.kind_metrics().items()},
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def kinds_of(results: list[RunResult]) -> list[str]:
    """The annotation kinds any run was scored on, sorted."""
    return sorted({kind for r in results for kind in r.kind_top1})


def summarise(results: list[RunResult]) -> list[dict[str, object]]:
    """One row per variant (in first-seen order): mean ± std over seeds of video top-1, overall
    (``video_top1``) and per kind (``video_top1_<kind>``)."""
    rows = []
    for label in dict.fromkeys(r.label for r in results):
        runs = [r for r in results if r.label == label]
        row: dict[str, object] = {
            "variant": label,
            "seeds": len(runs),
            "video_top1": mean_std([r.video_top1 for r in runs]),
        }
        for kind in kinds_of(results):
            row[f"video_top1_{kind}"] = mean_std([r.kind_top1[kind] for r in runs])
        rows.append(
            row
            | {"params": runs[0].params, "gmacs": runs[0].gmacs, "step_ms": statistics.median(r.step_ms for r in runs)}
        )
    return rows


def markdown_table(rows: list[dict[str, object]], chance: float, kinds: list[str] = ()) -> str:
    """The ablation table of docs/benchmarks.md (and results.md): one column per kind after the overall one."""
    kind_heads = "".join(f" {kind} clips |" for kind in kinds)
    lines = [
        f"| variant | video top-1 (mean ± std) |{kind_heads} seeds | params (k) | GMACs / clip | train step (ms) |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|---|",
    ]
    for row in rows:
        cells = [row["video_top1"], *(row[f"video_top1_{kind}"] for kind in kinds)]
        accuracies = "".join(f" {100 * mean:.1f} ± {100 * std:.1f} % |" for mean, std in cells)
        lines.append(
            f"| {row['variant']} |{accuracies} {row['seeds']} | {row['params'] / 1e3:.1f} | {row['gmacs']:.3f} "
            f"| {row['step_ms']:.0f} |"
        )
    lines.append(f"\nChance is {100 * chance:.0f} %.")
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], results: list[RunResult], chance: float, path: Path) -> None:
    """Bar chart of mean video top-1 per variant, every seed as a dot, chance as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    labels = [str(row["variant"]) for row in rows]
    ax.bar(range(len(rows)), [100 * row["video_top1"][0] for row in rows], color="#8fb3d9")
    for index, label in enumerate(labels):
        seeds = [100 * r.video_top1 for r in results if r.label == label]
        ax.plot([index] * len(seeds), seeds, "o", color="#1f4e79", markersize=4)
    ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("video top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Synthetic long-range set: what global context buys", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_outputs(results: list[RunResult], num_classes: int, out_dir: Path, measured_on: str = "") -> str:
    """Write results.csv, results.md (the table, then ``measured_on``: data and code) and
    ablation.png (each atomically); return the table."""
    chance = 1.0 / num_classes
    rows = summarise(results)
    table = markdown_table(rows, chance, kinds_of(results))
    text = io.StringIO()
    csv_rows = [r.csv_row() for r in results]
    writer = csv.DictWriter(text, fieldnames=list(csv_rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(csv_rows)
    write_atomic(out_dir / "results.csv", text.getvalue())
    write_atomic(out_dir / "results.md", table + (f"\n\n{measured_on}" if measured_on else "") + "\n")
    plot(rows, results, chance, out_dir / "ablation.png")
    return table


def run(cfg: DictConfig, base_overrides: list[str]) -> int:
    """Run every (variant, seed) and write the outputs."""
    ablation = cfg.ablation
    provenance = measured_on(Path(cfg.data.shards_dir), cfg)  # the commit the runs start from
    results = []
    for variant in ablation.variants:
        for seed in ablation.seeds:
            overrides = base_overrides + run_overrides(variant, seed, Path(ablation.work_dir), ablation.experiment)
            run_cfg = load_config(overrides)
            print(f"== {variant.label}, seed {seed}", flush=True)
            results.append(train_and_test(run_cfg, str(variant.label)))
    num_classes = len(load_classes(classes_file(cfg.data)))
    print(write_outputs(results, num_classes, Path(ablation.out_dir), provenance))
    return 0


def measured_on(shards_dir: Path, cfg: DictConfig) -> str:
    """What the table was measured on: the shards' DVC hash and manifest md5, the commit, the schedule."""
    data = data_fingerprint(shards_dir)
    return (
        f"Measured on `{shards_dir}` (dvc.lock md5 {data.get('data.dvc_md5', 'not in dvc.lock')}, manifest md5 "
        f"{data['data.manifest_md5']}) at commit {git_commit()}, {cfg.train.epochs} epochs of batch "
        f"{cfg.train.batch_size} per run."
    )


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    # Overrides of ablation.* steer the loop; the rest (e.g. train.epochs=4) go to every run.
    run_overrides_only = [o for o in overrides if not o.startswith("ablation.")]
    return stage_main(lambda cfg: run(cfg, run_overrides_only), overrides)


if __name__ == "__main__":
    raise SystemExit(main())
