"""Where the time of one double attention block goes: the profiler's table of its aten ops.

Forward + backward of ``DoubleAttention(512, 128, 128)`` on a (2, 512, 8, 28, 28) map in training
mode (the issue's setting), after warm-up, under ``torch.profiler``: every op's self CPU time, its
share and calls, and every ``aten::copy_`` with the shapes it copied (an activation-sized copy
is one whose tensor has 28·28·8 = 6272 positions or more).

    python benchmarks/attention_profile.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from a2model import DoubleAttention

SHAPE = (2, 512, 8, 28, 28)
POSITIONS = 8 * 28 * 28


def step(block: torch.nn.Module, x: torch.Tensor) -> None:
    block(x).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="profiled steps (the table is per step)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    block = DoubleAttention(512, 128, 128).train()
    torch.nn.init.ones_(block.norm.weight)
    x = torch.randn(SHAPE, requires_grad=True)
    for _ in range(2):
        step(block, x)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.repeats):
            step(block, x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    per_step = total / args.repeats / 1e3
    print(f"{SHAPE}, forward + backward, {torch.get_num_threads()} threads: {per_step:.1f} ms per step\n")
    print("| op | self ms per step | share | calls per step |")
    print("|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        ms, share = e.self_cpu_time_total / args.repeats / 1e3, e.self_cpu_time_total / total
        print(f"| `{e.key}` | {ms:.1f} | {share:.0%} | {e.count // args.repeats} |")
    copies = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::copy_"]
    large = [e for e in copies if any(_numel(s) >= POSITIONS * 64 for s in e.input_shapes if s)]
    print(f"\nactivation-sized aten::copy_ per step: {sum(e.count for e in large) // args.repeats}")
    for e in large:
        ms = e.self_cpu_time_total / args.repeats / 1e3
        print(f"- {e.input_shapes[0]}: {e.count // args.repeats} per step, {ms:.1f} ms")


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
