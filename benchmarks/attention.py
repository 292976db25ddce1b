"""Double attention vs non-local vs the wrong (L × L first) order: time, memory, efficiency.

Forward + backward of one block on a (1, 512, T, H, W) map at growing T×H×W, all measured in one
run on this machine, printed as a Markdown table of ratios. Peak memory is the growth of the
resident set during one forward + backward (the CPU allocator keeps no statistics; see
``peak_bytes``); efficiency is the block's multiply-adds (forward + 2× for backward) per second over
this machine's measured peak fp32 matrix-multiply rate.

    .venv/bin/python benchmarks/attention.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from a2model import DoubleAttention, NonLocal, count_macs
from a2model.attention import pointwise

CHANNELS = 512
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
    return positions * positions * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three smallest sizes, fewer repeats")
    args = parser.parse_args()
    fix_malloc_mmap_threshold()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    sizes = SIZES[:3] if args.quick else SIZES
    peak = peak_matmul_macs_per_s()
    print(f"peak fp32 matmul on this machine: {peak / 1e9:.1f} GMAC/s, {torch.get_num_threads()} threads\n")
    print(
        "| T×H×W | L | A² ms | non-local ms | wrong-order ms | A² speed-up vs non-local | vs wrong order "
        "| A² MB | non-local MB | wrong-order MB | A² MB per 1k positions | A² % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t, h, w in sizes:
        shape = (1, CHANNELS, t, h, w)
        positions = t * h * w
        repeats = 5 if positions <= 6272 else 2
        ms, mb = {}, {}
        for name, make in BLOCKS.items():
            if name != "A²" and affinity_bytes(shape) > MAX_AFFINITY_BYTES:
                continue
            block = make().train()
            nn.init.ones_(block.norm.weight)
            x = torch.randn(shape, requires_grad=True)
            ms[name] = time_step(block, x, repeats) * 1e3
            mb[name] = peak_bytes(block, x) / 2**20
        a2_macs = 3 * count_macs(BLOCKS["A²"](), shape)  # forward + backward (≈ 2× forward)
        efficiency = a2_macs / (ms["A²"] / 1e3) / peak

        def cell(table: dict[str, float], name: str) -> str:
            return f"{table[name]:.0f}" if name in table else "skipped"

        def ratio(name: str, ms: dict[str, float] = ms) -> str:
            return f"{ms[name] / ms['A²']:.1f}×" if name in ms else "–"

        print(
            f"| {t}×{h}×{w} | {positions} | {ms['A²']:.0f} | {cell(ms, 'non-local')} | {cell(ms, 'A² wrong order')} "
            f"| {ratio('non-local')} | {ratio('A² wrong order')} | {mb['A²']:.0f} | {cell(mb, 'non-local')} "
            f"| {cell(mb, 'A² wrong order')} | {mb['A²'] / positions * 1000:.1f} | {efficiency:.0%} |",
            flush=True,
        )
    print(f"\nskipped: L × L variants whose affinity alone exceeds {MAX_AFFINITY_BYTES / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
