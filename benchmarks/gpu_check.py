"""One GPU check that fits a short loan (≤ 8 min on one GPU): the chip's peak, A²-ResNet-50 training
steps against it, the A² block against non-local, and the JPEG data path against the model.

Needs only torch/torchvision and ``a2model`` (the GPU machine is bare); measured in one run:

- peak: a warmed-up 8192² ``torch.mm`` in bf16 and fp32 (TF32 off), in FLOP/s;
- ``r50_a2`` and ``r50_plain`` SGD training steps on 8×224² clips, bf16 autocast, channels-last 3-D,
  eager and ``torch.compile``: clips/s, model-FLOPs utilisation (3 × forward MACs × 2 per clip over
  the bf16 peak), peak memory;
- the A² block, non-local and the A² block in the wrong order (forward + backward, fp32) at
  8×28², 16×28², 16×56²: ms, peak memory, % of GEMM-bound at the measured rate;
- the data path: 8-frame clips of 256×340 JPEGs decoded on the GPU in batches
  (``torchvision.io.decode_jpeg(device="cuda")``) against CPU decode over 8 threads, in clips/s,
  next to the model's.

Prints Markdown tables and writes them as JSON under ``--out``. Without a GPU it says so in one line
and exits 0; ``--smoke`` runs every part at toy sizes on the CPU (what CI checks).

    python benchmarks/gpu_check.py --out gpu_check/ [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from attention import BLOCKS  # benchmarks/attention.py: A², non-local, A² in the wrong order
from torch import nn

from a2model import build_model, count_macs

Table = list[dict[str, object]]


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


def jpeg_clips(count: int, frames: int, height: int, width: int) -> list[list[torch.Tensor]]:
    """``count`` clips of ``frames`` JPEG frames (quality 90) of smooth noise, as the shards hold them."""
    from torchvision.io import encode_jpeg

    generator = torch.Generator().manual_seed(0)
    clips = []
    for _ in range(count):
        small = torch.rand(frames, 3, height // 8, width // 8, generator=generator)
        images = (nn.functional.interpolate(small, size=(height, width), mode="bilinear") * 255).to(torch.uint8)
        clips.append([encode_jpeg(image, quality=90) for image in images])
    return clips


def data_path(device: torch.device, clips: list[list[torch.Tensor]], threads: int) -> Table:
    """Clips/s of JPEG decode: batched on ``device`` (when CUDA) against ``threads`` CPU threads."""
    from torchvision.io import decode_jpeg

    flat = [frame for clip in clips for frame in clip]
    rows = []
    with ThreadPoolExecutor(threads) as pool:
        seconds = timed(lambda: list(pool.map(decode_jpeg, flat)), torch.device("cpu"), repeats=3, warmup=1)
    rows.append({"decode": f"CPU, {threads} threads", "clips_per_s": len(clips) / seconds})
    if device.type == "cuda":
        seconds = timed(lambda: decode_jpeg(flat, device=device), device, repeats=3, warmup=1)
        rows.append({"decode": "GPU (nvJPEG), one batch", "clips_per_s": len(clips) / seconds})
    return rows


def markdown(title: str, rows: Table) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else "–" if v is None else str(v)  # noqa: E731
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(cell(row.get(key)) for key in keys) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder for the JSON tables")
    parser.add_argument("--smoke", action="store_true", help="every part at toy sizes on the CPU")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing measured (--smoke runs the parts on the CPU)")
        return 0
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        plan = {"mm": 256, "models": ["tiny_a2", "tiny_plain"], "batches": [2], "compiled": [False],
                "sizes": [(2, 7, 7)], "block_batch": 1, "clips": (2, 2, 64, 80)}  # fmt: skip
    else:
        plan = {"mm": 8192, "models": ["r50_a2", "r50_plain"], "batches": [8, 16, 32], "compiled": [False, True],
                "sizes": [(8, 28, 28), (16, 28, 28), (16, 56, 56)], "block_batch": 2,
                "clips": (64, 8, 256, 340)}  # fmt: skip
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
    decode = data_path(device, jpeg_clips(*plan["clips"]), threads=8)
    tables = {"matmul peak": peaks, "training steps (bf16, channels-last)": steps,
              "attention blocks (fp32, forward + backward)": blocks, "JPEG decode": decode}  # fmt: skip
    print(f"## GPU check on {chip}, torch {torch.__version__}\n")
    print("\n\n".join(markdown(title, rows) for title, rows in tables.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"chip": chip, "torch": torch.__version__, **tables}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
