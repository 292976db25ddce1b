"""ImageNet ResNet-50 weights inflated into the 3-D backbones (I3D, Carreira & Zisserman 2017).

``inflate_from_2d(net, state_dict_2d)`` maps a torchvision ResNet state dict (``conv1``, ``bn1``,
``layerK.J.convI`` / ``bnI``, ``layerK.J.downsample.{0,1}``, ``fc``) onto a :class:`VideoResNet`
(``stem``, ``stages.S.P.conv_a/b/c``, ``shortcut``, ``fc``) or onto torchvision's own 2-D layout with
A² blocks inserted (``a2_resnet50``). Bottleneck J of a layer is the J-th bottleneck of the
matching stage, whatever attention blocks sit between them; attention blocks keep their identity
initialisation. A 2-D kernel ``(O, I, k, k)`` fills a 3-D ``(O, I, k_t, k, k)`` one:

- ``centre``: in the middle temporal slice, zeros elsewhere: on a clip of identical frames every
  layer computes exactly what the 2-D net computes on one frame (zero padding adds nothing);
- ``mean``: ``1 / k_t`` of it in every slice (I3D's "bootstrapping"): the same on identical
  frames wherever the temporal zero padding does not reach.

Pure: no I/O, the caller loads the state dict (``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Literal

import torch
from torch import nn

from a2model.video_resnet import Bottleneck3d, VideoResNet

Inflation = Literal["centre", "mean"]
_BOTTLENECK_2D = {"conv_a": "conv1", "bn_a": "bn1", "conv_b": "conv2", "bn_b": "bn2", "conv_c": "conv3", "bn_c": "bn3"}


@dataclass
class InflationReport:
    """What ``inflate_from_2d`` did: target keys loaded, target keys left at their initialisation
    (``missing``; of them ``new_blocks``: no 2-D counterpart, e.g. attention blocks, and ``excluded``
    by pattern), source keys nothing took, and the pairs whose shapes did not fit (``key: source → target``)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    new_blocks: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def backbone_loaded(self) -> bool:
        """Whether every backbone tensor with a 2-D counterpart was loaded (the classifier, the new
        blocks and the excluded keys aside), and at least one was."""
        intended = set(self.new_blocks) | set(self.excluded)
        lacking = [key for key in self.missing if key not in intended and not key.startswith("fc.")]
        return not lacking and any(not key.startswith("fc.") for key in self.loaded)

    def summary(self) -> str:
        """A few lines for a log: the counts, then the first keys of each kind that did not load."""
        lines = [
            f"inflated {len(self.loaded)} tensors; {len(self.missing)} left at initialisation, "
            f"{len(self.unexpected)} of the 2-D weights unused, {len(self.mismatched)} of another shape"
        ]
        for name, keys in (("mismatched", self.mismatched), ("left at initialisation", self.missing)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                lines.append(f"  {name}: {', '.join(keys[:3])}{more}")
        return "\n".join(lines)


def source_names(net: nn.Module) -> dict[str, str]:
    """``{target module name: torchvision 2-D module name}`` of ``net``'s stem, bottlenecks and head."""
    if isinstance(net, VideoResNet):
        names = {"stem.0": "conv1", "stem.1": "bn1", "fc": "fc"}
        for stage_index, stage in enumerate(net.stages):
            bottlenecks = [(p, m) for p, m in enumerate(stage) if isinstance(m, Bottleneck3d)]
            for j, (position, _) in enumerate(bottlenecks):
                prefix, source = f"stages.{stage_index}.{position}", f"layer{stage_index + 1}.{j}"
                names |= {f"{prefix}.{ours}": f"{source}.{theirs}" for ours, theirs in _BOTTLENECK_2D.items()}
                names |= {f"{prefix}.shortcut.{i}": f"{source}.downsample.{i}" for i in (0, 1)}
        return names
    names = {"conv1": "conv1", "bn1": "bn1", "fc": "fc"}  # torchvision's layout, attention blocks inserted
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        bottlenecks = [p for p, m in enumerate(getattr(net, layer)) if hasattr(m, "conv3")]
        for j, position in enumerate(bottlenecks):
            for part in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample.0", "downsample.1"):
                names[f"{layer}.{position}.{part}"] = f"{layer}.{j}.{part}"
    return names


def inflated(weight_2d: torch.Tensor, target_shape: torch.Size, mode: Inflation) -> torch.Tensor | None:
    """``weight_2d`` spread over the temporal kernel of ``target_shape`` (``(O, I, k_t, k, k)``), or
    as it is for an equal shape; None when it does not fit."""
    if weight_2d.shape == target_shape:
        return weight_2d.clone()
    if weight_2d.dim() == 0 or len(target_shape) == 0:
        return None
    if weight_2d.dim() != 4 or len(target_shape) != 5 or target_shape[:2] + target_shape[3:] != weight_2d.shape:
        return None
    k_t = target_shape[2]
    if mode == "mean":
        return weight_2d.unsqueeze(2).repeat(1, 1, k_t, 1, 1) / k_t
    kernel = weight_2d.new_zeros(target_shape)
    kernel[:, :, k_t // 2] = weight_2d
    return kernel


def inflate_from_2d(
    net: nn.Module, state_dict_2d: Mapping[str, torch.Tensor], mode: Inflation = "centre", exclude: Sequence[str] = ()
) -> InflationReport:
    """Load ``state_dict_2d`` (a torchvision ResNet's) into ``net`` in place, inflating its kernels.

    Keys of ``net`` matching an ``exclude`` pattern (``fnmatch``, e.g. ``fc.*``) keep their
    initialisation. The classifier is copied only when its class count matches; what does not fit
    is reported, not raised, so the caller decides (the trainer refuses unless ``backbone_loaded``).
    """
    if mode not in ("centre", "mean"):
        raise ValueError(f"inflation mode must be 'centre' or 'mean', not {mode!r}")
    names, report = source_names(net), InflationReport()
    used: set[str] = set()
    new_state = {}
    for key, target in net.state_dict().items():
        module, _, leaf = key.rpartition(".")
        source_key = f"{names[module]}.{leaf}" if module in names else None
        if any(fnmatch(key, pattern) for pattern in exclude):
            report.excluded.append(key)
        elif source_key is None:
            report.new_blocks.append(key)
        if key in report.excluded or source_key is None or source_key not in state_dict_2d:
            report.missing.append(key)
            continue
        used.add(source_key)
        source = state_dict_2d[source_key]
        value = inflated(source, target.shape, mode) if torch.is_floating_point(target) else source.clone()
        if value is None:
            report.mismatched.append(f"{key}: {tuple(source.shape)} → {tuple(target.shape)}")
            report.missing.append(key)
            continue
        new_state[key] = value.to(target.dtype)
        report.loaded.append(key)
    report.unexpected = sorted(set(state_dict_2d) - used)
    net.load_state_dict(new_state, strict=False)
    return report


def load_matching(
    net: nn.Module, state_dict: Mapping[str, torch.Tensor], exclude: Sequence[str] = ()
) -> InflationReport:
    """Load a state dict of the same layout (another training of this architecture) into ``net`` in
    place: every tensor of the same name and shape, unless its key matches an ``exclude`` pattern
    (e.g. ``fc.*`` for another class list); the rest is reported as ``inflate_from_2d`` does."""
    report, new_state = InflationReport(), {}
    for key, target in net.state_dict().items():
        if any(fnmatch(key, pattern) for pattern in exclude):
            report.excluded.append(key)
        elif key not in state_dict:
            report.new_blocks.append(key)  # e.g. the attention blocks of an A² net started from a plain one
        elif state_dict[key].shape != target.shape:
            report.mismatched.append(f"{key}: {tuple(state_dict[key].shape)} → {tuple(target.shape)}")
        else:
            new_state[key] = state_dict[key].to(target.dtype)
            report.loaded.append(key)
            continue
        report.missing.append(key)
    report.unexpected = sorted(set(state_dict) - set(net.state_dict()))
    net.load_state_dict(new_state, strict=False)
    return report
