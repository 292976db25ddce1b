"""Double attention vs non-local vs the wrong (L × L first) order: time, memory, efficiency.

Forward + backward of one block on a (2, 512, T, H, W) map at growing T×H×W, all measured in one
run on this machine, printed as a Markdown table of ratios. Peak memory is the growth of the
resident set during one forward + backward (the CPU allocator keeps no statistics; see
``peak_bytes``); efficiency is the block's multiply-adds (forward + 2× for backward) per second over
this machine's measured peak fp32 matrix-multiply rate (a 2048² GEMM): the share of the time the
block's multiply-adds would need at that rate ("% of GEMM-bound"). Memory is measured first,
in a process of its own where every large block is mmap-ed (``fix_malloc_mmap_threshold``); the
times then with the allocator as it is (mmap-ing every block would slow the timed steps down).

    .venv/bin/python benchmarks/attention.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from a2model import DoubleAttention, NonLocal, count_macs
from a2model.attention import pointwise

BATCH, CHANNELS = 2, 512
SIZES = [(4, 14, 14), (8, 14, 14), (8, 28, 28), (16, 28, 28), (16, 56, 56)]
MAX_AFFINITY_BYTES = 1.5 * 2**30  # skip L × L variants whose affinity alone would pass this


class WrongOrderDoubleAttention(DoubleAttention):
    """The same block computed as A · (softmax(B)ᵀ softmax(V)): an L × L matrix first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, v = pointwise(self.project, x).split([self.m, self.n, self.n], dim=1)
        affinity = torch.bmm(b.softmax(-1).transpose(1, 2), v.softmax(1))  # (N, L, L)
        z = pointwise(self.out, torch.bmm(a, affinity))
        return x + self.norm(z.unflatten(2, x.shape[2:]))


BLOCKS: dict[str, Callable[[], nn.Module]] = {
    "A²": lambda: DoubleAttention(CHANNELS, CHANNELS // 4, CHANNELS // 4),
    "non-local": lambda: NonLocal(CHANNELS, CHANNELS // 2),
    "A² wrong order": lambda: WrongOrderDoubleAttention(CHANNELS, CHANNELS // 4, CHANNELS // 4),
}


def step(block: nn.Module, x: torch.Tensor) -> None:
    """One forward + backward."""
    block(x).sum().backward()


def time_step(block: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward after one warm-up."""
    step(block, x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(block, x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fix_malloc_mmap_threshold() -> None:
    """Make glibc mmap every block over 64 KiB and unmap it on free (no dynamic threshold), so the
    resident set follows the live tensors; otherwise freed blocks stay in the heap."""
    libc = ctypes.CDLL("libc.so.6")
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_bytes(block: nn.Module, x: torch.Tensor) -> int:
    """Peak resident-set growth during one forward + backward.

    Linux resets the high-water mark (VmHWM) when 5 is written to /proc/self/clear_refs; tensors
    this size are mmap-ed by malloc and returned to the system when freed, so the growth of the
    resident set over its value before the step is the step's peak memory.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    step(block, x)
    return (_status_kib("VmHWM") - before) * 1024


def peak_matmul_macs_per_s() -> float:
    """Best multiply-adds per second of a large fp32 matmul on this machine."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2048**3 / best


def affinity_bytes(shape: tuple[int, ...]) -> int:
    positions = shape[2] * shape[3] * shape[4]
    return shape[0] * positions * positions * 4


def repeats(size: tuple[int, int, int]) -> int:
    return 5 if size[0] * size[1] * size[2] <= 6272 else 2


def measure(size: tuple[int, int, int], probe: Callable[[nn.Module, torch.Tensor], float]) -> dict[str, float]:
    """``probe(block, x)`` of every variant at ``size`` (L × L ones skipped past MAX_AFFINITY_BYTES)."""
    shape = (BATCH, CHANNELS, *size)
    found = {}
    for name, make in BLOCKS.items():
        if name != "A²" and affinity_bytes(shape) > MAX_AFFINITY_BYTES:
            continue
        torch.manual_seed(0)
        block = make().train()
        nn.init.ones_(block.norm.weight)
        found[name] = probe(block, torch.randn(shape, requires_grad=True))
    return found


def table_row(size: tuple[int, int, int], ms: dict[str, float], mb: dict[str, float], peak: float) -> str:
    """One Markdown row: times, ratios, memory, and the A² block's share of its GEMM-bound time."""
    t, h, w = size
    positions = t * h * w
    a2_macs = 3 * count_macs(BLOCKS["A²"](), (BATCH, CHANNELS, *size))  # forward + backward (≈ 2× forward)
    efficiency = a2_macs / (ms["A²"] / 1e3) / peak

    def cell(table: dict[str, float], name: str) -> str:
        return f"{table[name]:.0f}" if name in table else "skipped"

    def ratio(name: str) -> str:
        return f"{ms[name] / ms['A²']:.1f}×" if name in ms else "–"

    return (
        f"| {t}×{h}×{w} | {positions} | {ms['A²']:.0f} | {cell(ms, 'non-local')} | {cell(ms, 'A² wrong order')} "
        f"| {ratio('non-local')} | {ratio('A² wrong order')} | {mb['A²']:.0f} | {cell(mb, 'non-local')} "
        f"| {cell(mb, 'A² wrong order')} | {mb['A²'] / positions * 1000:.1f} | {efficiency:.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three smallest sizes, fewer repeats")
    parser.add_argument("--memory", action="store_true", help="only the peak memory, as JSON (run in its own process)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    sizes = SIZES[:3] if args.quick else SIZES
    if args.memory:
        fix_malloc_mmap_threshold()
        print(json.dumps([measure(size, lambda block, x: peak_bytes(block, x) / 2**20) for size in sizes]))
        return
    memory = subprocess.run(
        [sys.executable, __file__, "--memory", *(["--quick"] if args.quick else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    mb = dict(zip(sizes, json.loads(memory.stdout)))
    peak = peak_matmul_macs_per_s()
    ms = {size: measure(size, lambda block, x, n=size: time_step(block, x, repeats(n)) * 1e3) for size in sizes}
    print(f"peak fp32 matmul on this machine: {peak / 1e9:.1f} GMAC/s, {torch.get_num_threads()} threads\n")
    print(
        "| T×H×W | L | A² ms | non-local ms | wrong-order ms | A² speed-up vs non-local | vs wrong order "
        "| A² MB | non-local MB | wrong-order MB | A² MB per 1k positions | A² % of GEMM-bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        print(table_row(size, ms[size], mb[size], peak))
    print(f"\nskipped: L × L variants whose affinity alone exceeds {MAX_AFFINITY_BYTES / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
