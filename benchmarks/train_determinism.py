"""What bit-identical CPU training across machines would cost: step time and weight spread.

PyTorch's CPU kernels pick their code by the CPU: oneDNN (convolutions) its ISA, MKL (matrix
multiplies) its code path, and both split work by the thread count, so the same training gives
other weights on another CPU type. The knobs that pin them: ``ONEDNN_MAX_CPU_ISA``, MKL's
conditional numerical reproducibility ``MKL_CBWR``, a fixed thread count and
``torch.use_deterministic_algorithms``. Each setting below runs in its own process (the
variables must be set before torch loads): ``--steps`` SGD steps of ``tiny_a2`` (the default
run's model, batch 16 of 8×56²) from one seed on fixed random clips. Printed per setting: the
median ms/step against the first row's (the trainer's own setting), and the largest weight
difference from the first row's final weights (0 means bit-identical).

    python benchmarks/train_determinism.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_DETERMINISTIC = {"A2NETS_DETERMINISTIC": "1"}  # torch.use_deterministic_algorithms, as the trainer on CPU
SETTINGS = {  # name: (environment, threads); threads None = torch's default (the cores)
    "trainer's setting (native ISA, all cores, deterministic algorithms)": (_DETERMINISTIC, None),
    "without deterministic algorithms": ({}, None),
    "1 thread": (_DETERMINISTIC, 1),
    "AVX2 pinned (oneDNN, MKL CBWR)": (
        {**_DETERMINISTIC, "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"},
        None,
    ),
    "SSE4.1 pinned, the x86-64 floor (oneDNN, MKL CBWR)": (
        {**_DETERMINISTIC, "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
        None,
    ),
}
MODEL, BATCH, NUM_CLASSES = "tiny_a2", 16, 4


def worker(steps: int, threads: int | None, weights_out: Path) -> dict[str, float]:
    """Train ``steps`` steps in this process; save the final weights; return the step time."""
    import torch
    import torch.nn.functional as F

    import a2model
    from pipeline.training.optim import parameter_groups

    if threads:
        torch.set_num_threads(threads)
    if os.environ.get("A2NETS_DETERMINISTIC"):
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    net = a2model.build_model(MODEL, NUM_CLASSES).train()
    clips = torch.randn(steps + 1, BATCH, *a2model.MODEL_INPUTS[MODEL])
    labels = torch.randint(0, NUM_CLASSES, (steps + 1, BATCH))
    optimizer = torch.optim.SGD(parameter_groups(net, 5e-4), lr=0.05, momentum=0.9)
    times = []
    for step in range(steps + 1):  # step 0 warms up
        start = time.perf_counter()
        loss = F.cross_entropy(net(clips[step]), labels[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    torch.save(net.state_dict(), weights_out)
    timed = sorted(times[1:])
    return {"ms_per_step": 1e3 * timed[len(timed) // 2], "threads": torch.get_num_threads()}


def max_weight_difference(a: Path, b: Path) -> float:
    import torch

    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, SETTINGS[args.worker][1], Path(args.out))))
        return
    print(f"{MODEL}, batch {BATCH}, {args.steps} SGD steps from one seed, each setting in a fresh process\n")
    print("| setting | threads | ms/step | step time vs the first row | max abs weight diff vs the first row |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        baseline: tuple[float, Path] | None = None
        for i, (name, (env, _)) in enumerate(SETTINGS.items()):
            out = Path(tmp) / f"{i}.pt"
            result = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--worker", name, "--out", str(out)],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            baseline = baseline or (figures["ms_per_step"], out)
            diff = max_weight_difference(baseline[1], out)
            print(
                f"| {name} | {figures['threads']} | {figures['ms_per_step']:.0f} | "
                f"{figures['ms_per_step'] / baseline[0]:.2f}× | {'0 (identical)' if diff == 0 else f'{diff:.2e}'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
