"""2-D ResNet-50 and A²-ResNet-50, the paper's ImageNet model (torchvision's ResNet-50 + 5 A² blocks)."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet50 as tv_resnet50

from a2model.attention import DoubleAttention

# After which bottlenecks of torchvision's layer2 (res3, c = 512) and layer3 (res4, c = 1024) an A²
# block goes: 2 + 3 = 5 blocks with m = n = c/2, which gives the paper's 33.0M params / 6.5 GMACs.
A2_RESNET50_AFTER = {"layer2": (1, 3), "layer3": (1, 3, 5)}


def resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50 (randomly initialised)."""
    return tv_resnet50(num_classes=num_classes)


def a2_resnet50(num_classes: int = 1000, attention_ratio: float = 0.5) -> nn.Module:
    """ResNet-50 with double attention blocks after the bottlenecks listed in ``A2_RESNET50_AFTER``."""
    model = tv_resnet50(num_classes=num_classes)
    for layer_name, after in A2_RESNET50_AFTER.items():
        layer = getattr(model, layer_name)
        blocks: list[nn.Module] = []
        for index, block in enumerate(layer):
            blocks.append(block)
            if index in after:
                channels = block.conv3.out_channels
                inner = round(channels * attention_ratio)
                blocks.append(DoubleAttention(channels, inner, inner, spatial_dims=2))
        setattr(model, layer_name, nn.Sequential(*blocks))
    return model
