"""Training-step time of each model family at its default input: A² vs plain vs non-local.

One SGD step = forward, cross-entropy, backward, optimizer step, on random clips in the layout
the trainer feeds (N, 3, T, H, W); on GPU under the trainer's settings (bf16 autocast,
channels_last_3d, cuDNN autotuning). Families and their default inputs:

- tiny (``tiny_*``): batch 16 of 8×56², the CPU models of the synthetic pipeline;
- r26 (``r26_*``, ``r29_plain``): batch 2 of 16×112², the paper's ablation backbone;
- r50 (``r50_*``): batch 1 of 8×224², the paper's Kinetics model (one timed step on CPU).

Prints a Markdown table: ms/step, clips/s, params and MACs per clip, and step time relative to
the plain model of the same family.

    python benchmarks/train_step.py [--families tiny r26 r50] [--device auto] [--steps 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import a2model
from pipeline.runtime.device import autocast, resolve_device
from pipeline.training.optim import parameter_groups


@dataclass(frozen=True)
class Family:
    """Models compared at one input: the first is the plain baseline."""

    models: tuple[str, ...]
    batch: int
    cpu_steps: int  # timed steps on CPU (GPU times --steps)


FAMILIES = {
    "tiny": Family(("tiny_plain", "tiny_a2", "tiny_nonlocal", "tiny_plain_deep"), 16, 5),
    "r26": Family(("r26_plain", "r26_a2", "r26_nonlocal", "r29_plain"), 2, 2),
    "r50": Family(("r50_plain", "r50_a2"), 1, 1),
}
NUM_CLASSES = 400


def step_seconds(name: str, batch: int, steps: int, device: torch.device) -> float:
    """Median wall time of ``steps`` training steps of ``name`` after one warm-up step."""
    torch.manual_seed(0)
    net = a2model.build_model(name, NUM_CLASSES).to(device).train()
    clips = torch.randn(batch, *a2model.MODEL_INPUTS[name], device=device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    optimizer = torch.optim.SGD(parameter_groups(net, 1e-4), lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(device, "bf16"):
            logits = net(clips)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model on GPU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{threads} threads'})\n"
    )
    print("| model | input (N×3×T×H×W) | ms/step | clips/s | params (M) | GMACs/clip | step vs plain |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for family in (FAMILIES[f] for f in args.families):
        steps = args.steps if device.type == "cuda" else family.cpu_steps
        baseline = None
        for name in family.models:
            seconds = step_seconds(name, family.batch, steps, device)
            baseline = baseline or seconds
            shape = a2model.MODEL_INPUTS[name]
            net = a2model.build_model(name, NUM_CLASSES).eval()
            params = a2model.count_params(net) / 1e6
            with torch.no_grad():
                macs = a2model.count_macs(net, (1, *shape)) / 1e9
            print(
                f"| {name} | {family.batch}×{'×'.join(map(str, shape))} | {seconds * 1e3:.0f} | "
                f"{family.batch / seconds:.3g} | {params:.2f} | {macs:.2f} | {seconds / baseline:.2f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
