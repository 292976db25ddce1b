"""One GPU check that fits a short loan (≤ 8 min on one GPU): the chip's peak, A²-ResNet-50 training
steps against it, the A² block against non-local, and the JPEG data path against the model.

Its core tables need only torch/torchvision, ``a2model`` and the torch-only data modules of
``pipeline`` (the GPU machine is bare); measured in one run:

- peak: a warmed-up 8192² ``torch.mm`` in bf16 and fp32 (TF32 off), in FLOP/s;
- ``r50_a2`` and ``r50_plain`` SGD training steps on 8×224² clips, bf16 autocast, channels-last 3-D,
  eager and ``torch.compile``: clips/s, model-FLOPs utilisation (3 × forward MACs × 2 per clip over
  the bf16 peak), peak memory;
- the A² block, non-local and the A² block in the wrong order (forward + backward, fp32) at
  8×28², 16×28², 16×56²: ms, peak memory, % of GEMM-bound at the measured rate;
- the trainer's two data paths (``pipeline.data.device_decode``; torch-only modules) over a shard of
  256×340 JPEG frames, 8-frame clips cut at 224² as ``gpu_paper`` cuts them: decoded in 8 DataLoader
  workers (``train.decode_on=workers``) and read there but decoded in batches on the GPU (nvJPEG,
  ``train.decode_on=device``), in clips/s, next to the model's: which one bounds training;
- a tiny training and its evaluation through the real stages (``train.device=cuda``,
  ``train.decode_on=device``) on ``--shards`` (default ``data/shards``), when the pipeline's
  dependencies are installed; otherwise one row says what it skipped.

Prints Markdown tables and writes them as JSON under ``--out``. Without a GPU it says so in one line
and exits 0; ``--smoke`` runs every part at toy sizes on the CPU (what CI checks).

    python benchmarks/gpu_check.py --out gpu_check/ [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from attention import BLOCKS  # benchmarks/attention.py: A², non-local, A² in the wrong order
from torch import nn

from a2model import build_model, count_macs

Table = list[dict[str, object]]
ROOT = Path(__file__).resolve().parents[1]


def timed(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``run()`` after ``warmup`` calls, synchronising the device around each."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def matmul_peaks(device: torch.device, size: int) -> Table:
    """FLOP/s of a square ``torch.mm`` in bf16 and fp32 (TF32 off: fp32 means fp32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        seconds = timed(lambda a=a, b=b: torch.mm(a, b), device, repeats=10)
        rows.append({"dtype": str(dtype).removeprefix("torch."), "size": size, "tflops": 2 * size**3 / seconds / 1e12})
    return rows


def training_steps(device: torch.device, models: list[str], batches: list[int], compiled: list[bool]) -> Table:
    """Clips/s, MFU against the bf16 peak (filled in by ``main``), peak memory of SGD steps."""
    rows = []
    for name in models:
        shape = (3, 8, 224, 224) if name.startswith("r50") else (3, 8, 56, 56)
        macs = count_macs(build_model(name, 400), (1, *shape))
        for compile_it in compiled:
            for batch in batches:
                rows.append({"model": name, "compile": compile_it, "batch": batch, "gmacs_per_clip": macs / 1e9,
                             **_train_step(name, shape, batch, compile_it, device)})  # fmt: skip
    return rows


def _train_step(name: str, shape: tuple[int, ...], batch: int, compile_it: bool, device: torch.device) -> dict:
    reset_peak(device)
    net = build_model(name, 400).to(device).to(memory_format=torch.channels_last_3d)
    step_net = torch.compile(net) if compile_it else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(batch, *shape, device=device).to(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, 400, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(step_net(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        seconds = timed(step, device, repeats=5, warmup=3)
    except torch.OutOfMemoryError:
        return {"clips_per_s": None, "peak_mb": "out of memory"}
    return {"clips_per_s": batch / seconds, "peak_mb": peak_memory_mb(device)}


def attention_blocks(device: torch.device, sizes: list[tuple[int, int, int]], batch: int) -> Table:
    """Forward + backward of each block at each size: ms, peak memory, % of GEMM-bound (filled in by ``main``)."""
    rows = []
    for size in sizes:
        for label, make in BLOCKS.items():
            reset_peak(device)
            block = make().to(device)
            x = torch.randn(batch, 512, *size, device=device, requires_grad=True)
            macs = count_macs(make(), (batch, 512, *size))
            try:
                seconds = timed(lambda b=block, x=x: b(x).sum().backward(), device, repeats=5)
            except torch.OutOfMemoryError:
                rows.append({"block": label, "size": "x".join(map(str, size)), "ms": None, "peak_mb": "out of memory"})
                continue
            rows.append({"block": label, "size": "x".join(map(str, size)), "ms": seconds * 1e3,
                         "peak_mb": peak_memory_mb(device), "flops": 3 * 2 * macs / seconds})  # fmt: skip
    return rows


def bench_shards(folder: Path, clips: int, frames: int, height: int, width: int) -> Path:
    """A ``train`` split of ``clips`` clips of ``frames`` JPEG frames (quality 90, smooth noise) in one
    shard laid out as the preprocess stage writes them (``<key>.<frame>.jpg`` and ``<key>.json``)."""
    from torchvision.io import encode_jpeg

    (folder / "train").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    with tarfile.open(folder / "train" / "train-000000.tar", "w") as tar:
        for clip in range(clips):
            small = torch.rand(frames, 3, height // 8, width // 8, generator=generator)
            images = (nn.functional.interpolate(small, size=(height, width), mode="bilinear") * 255).to(torch.uint8)
            for index, image in enumerate(images):
                add_member(tar, f"clip{clip:05d}.{index:06d}.jpg", encode_jpeg(image, quality=90).numpy().tobytes())
            record = {"num_frames": frames, "height": height, "width": width, "label_index": clip % 400}
            add_member(tar, f"clip{clip:05d}.json", json.dumps(record).encode())
    return folder


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def data_path(device: torch.device, shards: Path, crop: int, batch: int, workers: int) -> Table:
    """Training clips/s of the trainer's two data paths over ``shards`` (8 frames 8 apart, gpu_paper's
    crop and jitter): decoded in ``workers`` DataLoader workers, and read there but decoded on ``device``."""
    from torch.utils.data import DataLoader

    from pipeline.data.device_decode import DeviceDecoded, EncodedClips, collate_encoded
    from pipeline.data.shards import ClipDataset
    from pipeline.data.transforms import RandomClip, TrainTransform

    transform = TrainTransform(crop, (1.14, 1.43), hflip=True)
    dataset = ClipDataset(shards, "train", RandomClip(8, 8), transform)
    options = {"batch_size": batch, "num_workers": workers, "pin_memory": device.type == "cuda", "drop_last": True,
               "persistent_workers": workers > 0}  # fmt: skip
    on_workers = DataLoader(dataset, **options)
    on_device = DeviceDecoded(
        DataLoader(EncodedClips(dataset), collate_fn=collate_encoded, **options), transform, device
    )
    return [
        {"path": f"decode_on=workers ({workers} workers decode)", "clips_per_s": loader_rate(on_workers, device)},
        {"path": f"decode_on=device ({workers} workers read, {device.type} decodes)",
         "clips_per_s": loader_rate(on_device, device)},
    ]  # fmt: skip


def loader_rate(loader: Iterable[dict], device: torch.device) -> float:
    """Clips/s of the second pass over ``loader`` (the first starts the workers), clips landed on ``device``."""
    for _ in loader:
        pass
    sync(device)
    started, clips = time.perf_counter(), 0
    for batch in loader:
        clips += len(batch["frames"].to(device, non_blocking=True))
    sync(device)
    return clips / (time.perf_counter() - started)


def what_bounds(steps: Table, decode: Table) -> Table:
    """The fastest data path against the fastest training step of the first model: which bounds training."""
    model = steps[0]["model"]
    model_rate = max((row["clips_per_s"] or 0 for row in steps if row["model"] == model), default=0)
    data_rate = max(row["clips_per_s"] for row in decode)
    ratio = data_rate / model_rate if model_rate else None
    verdict = "the data path" if ratio is not None and ratio < 1 else "the model"
    return [{"model": model, "model_clips_per_s": model_rate, "data_clips_per_s": data_rate,
             "data_over_model": ratio, "bounds_training": verdict}]  # fmt: skip


PIPELINE_NEEDS = ("omegaconf", "hydra", "mlflow", "simplejpeg")  # what the train and evaluate stages import


def tiny_training(device: torch.device, dataset: Path, shards: Path, overrides: list[str]) -> Table:
    """``python -m pipeline.train`` then ``pipeline.evaluate`` on ``shards`` with ``train.device`` and
    ``train.decode_on=device``, in a scratch folder (its own MLflow store); skipped, saying why, when the
    pipeline's dependencies or the shards are not here."""
    missing = [name for name in PIPELINE_NEEDS if importlib.util.find_spec(name) is None]
    if missing or not (shards / "train").is_dir():
        why = f"needs {', '.join(missing)}" if missing else f"no shards at {shards} (make repro, or carry data/shards)"
        return [{"part": "tiny training + evaluation", "status": f"skipped: {why}"}]
    argv = [f"data.root={dataset.resolve()}", f"data.shards_dir={shards.resolve()}", f"train.device={device.type}",
            "train.decode_on=device", "train.system_metrics_s=0", *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        for stage in ("train", "evaluate"):
            done = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *argv], cwd=scratch, env=env,
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return [{"part": "tiny training + evaluation", "status": f"{stage} failed: {' '.join(tail)}"}]
        seconds = time.perf_counter() - started
        with open(Path(scratch) / "reports" / "train_metrics.csv") as rows:
            last = list(csv.DictReader(rows))[-1]
        metrics = json.loads((Path(scratch) / "reports" / "metrics.json").read_text())
    return [{"part": "tiny training + evaluation", "status": "ran", "epochs": int(last["epoch"]),
             "seconds": seconds, "last_epoch_clips_per_s": float(last["clips_per_s"]),
             "video_top1": metrics["video_top1"]}]  # fmt: skip


def markdown(title: str, rows: Table) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else "–" if v is None else str(v)  # noqa: E731
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(key)) for key in keys) + " |" for row in rows])


SMOKE = {"mm": 256, "models": ["tiny_a2", "tiny_plain"], "batches": [2], "compiled": [False], "sizes": [(2, 7, 7)],
         "block_batch": 1, "clips": (4, 16, 64, 80), "crop": 56, "loader_batch": 2, "workers": 1,
         "training": ["train.epochs=1", "model.clip.num_frames=4", "model.clip.stride=1", "model.clip.crop_size=32",
                      "train.batch_size=4", "train.num_workers=0", "train.val_every=0"]}  # fmt: skip
FULL = {"mm": 8192, "models": ["r50_a2", "r50_plain"], "batches": [8, 16, 32], "compiled": [False, True],
        "sizes": [(8, 28, 28), (16, 28, 28), (16, 56, 56)], "block_batch": 2, "clips": (64, 64, 256, 340), "crop": 224,
        "loader_batch": 16, "workers": 8, "training": ["train.epochs=10"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder for the JSON tables")
    parser.add_argument("--smoke", action="store_true", help="every part at toy sizes on the CPU")
    parser.add_argument("--dataset", type=Path, default=ROOT / "data" / "synthetic", help="data.root of the tiny run")
    parser.add_argument("--shards", type=Path, default=ROOT / "data" / "shards", help="data.shards_dir of the tiny run")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing measured (--smoke runs the parts on the CPU)")
        return 0
    device = torch.device("cpu" if args.smoke else "cuda")
    plan = SMOKE if args.smoke else FULL
    chip = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    peaks = matmul_peaks(device, plan["mm"])
    bf16, fp32 = (row["tflops"] * 1e12 for row in peaks)
    steps = training_steps(device, plan["models"], plan["batches"], plan["compiled"])
    for row in steps:
        if row["clips_per_s"]:
            row["mfu_pct"] = 100 * row["clips_per_s"] * 3 * 2 * row["gmacs_per_clip"] * 1e9 / bf16
    blocks = attention_blocks(device, plan["sizes"], plan["block_batch"])
    for row in blocks:
        if row.get("flops"):
            row["gemm_bound_pct"] = 100 * row.pop("flops") / fp32
    with tempfile.TemporaryDirectory() as scratch:
        shards = bench_shards(Path(scratch), *plan["clips"])
        decode = data_path(device, shards, plan["crop"], plan["loader_batch"], plan["workers"])
    tables = {"matmul peak": peaks, "training steps (bf16, channels-last)": steps,
              "attention blocks (fp32, forward + backward)": blocks, "data path (training clips)": decode,
              "what bounds training": what_bounds(steps, decode),
              "tiny training": tiny_training(device, args.dataset, args.shards, plan["training"])}  # fmt: skip
    print(f"## GPU check on {chip}, torch {torch.__version__}\n")
    print("\n\n".join(markdown(title, rows) for title, rows in tables.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"chip": chip, "torch": torch.__version__, **tables}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
