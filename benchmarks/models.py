"""Print the model table (params, multiply-adds at each model's default input) as Markdown."""

from __future__ import annotations

from a2model import MODEL_INPUTS, build_model, count_macs, count_params

# The paper's figures where it gives them (A²-Nets, Table 5 / §4): params (M), GMACs.
PAPER = {"a2_resnet50": (33.0, 6.5), "resnet50": (25.6, 4.1)}


def num_classes(name: str) -> int:
    """ImageNet models have 1000 classes, Kinetics models 400, the tiny ones the synthetic set's 4."""
    if name.endswith("resnet50"):
        return 1000
    return 4 if name.startswith("tiny") else 400


def table() -> str:
    """The Markdown table that docs/model.md carries."""
    lines = [
        "| model | input (C, T, H, W) | classes | params (M) | GMACs | paper params (M) | paper GMACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, shape in MODEL_INPUTS.items():
        model = build_model(name, num_classes(name))
        params, macs = count_params(model) / 1e6, count_macs(model, (1, *shape)) / 1e9
        paper_params, paper_macs = (f"{v:.1f}" for v in PAPER[name]) if name in PAPER else ("–", "–")
        dims = "×".join(str(d) for d in shape)
        lines.append(
            f"| {name} | {dims} | {num_classes(name)} | {params:.3f} | {macs:.3f} | {paper_params} | {paper_macs} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
