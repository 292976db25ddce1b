"""The double attention block (A²-Nets, Chen et al. 2018) and the non-local baseline block.

Both work on images ``(N, C, H, W)`` and on clips ``(N, C, T, H, W)`` and start as the identity
(their last BatchNorm is zero-initialised), so they can be dropped into a pretrained network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def pointwise(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution as one matrix multiply: ``(N, C_in, *S) -> (N, C_out, L)``.

    Same result as ``conv(x).flatten(2)``, but its backward is a plain GEMM, several times faster
    on CPU than the convolution's.
    """
    y = torch.matmul(conv.weight.flatten(1), x.flatten(2))
    return y if conv.bias is None else y + conv.bias[:, None]


def double_attention(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The functional core of the block: gather, then distribute.

    Args:
        a: features, ``(N, m, *S)``.
        b: gather logits, ``(N, n, *S)``; softmax over all positions gives n attention maps.
        v: distribution logits, ``(N, n, *S)``; softmax over the n axis at each position.

    Returns:
        ``Z = (A · softmax(B)ᵀ) · softmax(V)``, shape ``(N, m, *S)``. The m × n global descriptors
        G are formed first, so the cost is O(m·n·L) and no L × L matrix is ever built.
    """
    spatial = a.shape[2:]
    gather_maps = F.softmax(b.flatten(2), dim=-1)  # (N, n, L), each map sums to 1 over L
    descriptors = torch.bmm(a.flatten(2), gather_maps.transpose(1, 2))  # (N, m, n)
    distribution = F.softmax(v.flatten(2), dim=1)  # (N, n, L), sums to 1 over n at each position
    return torch.bmm(descriptors, distribution).unflatten(2, spatial)  # (N, m, *S)


class DoubleAttention(nn.Module):
    """``Y = X + BN(W_out(double_attention(φ(X), θ(X), ρ(X))))`` for 2-D or 3-D feature maps.

    The three 1×1 projections φ (m channels), θ and ρ (n channels each) are one fused convolution.

    Args:
        in_channels: c, the channels of X (and of Y).
        m: channels of each global descriptor.
        n: number of global descriptors (gather maps).
        spatial_dims: 2 for ``(N, C, H, W)``, 3 for ``(N, C, T, H, W)``.
    """

    def __init__(self, in_channels: int, m: int, n: int, spatial_dims: int = 3) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.m, self.n = m, n
        self.project = conv(in_channels, m + 2 * n, kernel_size=1)
        self.out = conv(m, in_channels, kernel_size=1, bias=False)
        self.norm = norm(in_channels)
        nn.init.zeros_(self.norm.weight)  # identity at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *S) -> (N, C, *S)``."""
        a, b, v = pointwise(self.project, x).split([self.m, self.n, self.n], dim=1)
        z = pointwise(self.out, double_attention(a, b, v))  # (N, C, L)
        return x + self.norm(z.unflatten(2, x.shape[2:]))


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018), as in PySlowFast's ``Nonlocal``.

    ``Y = X + BN(W_out(g(X) · softmax(θ(X)ᵀ φ(X) / √inner)ᵀ))``: every position attends to every
    other through an L × L affinity (keys and values optionally max-pooled by ``pool_size``).

    Args:
        in_channels: c, the channels of X (and of Y).
        inner_channels: channels of θ, φ and g (usually c / 2).
        spatial_dims: 2 for ``(N, C, H, W)``, 3 for ``(N, C, T, H, W)``.
        pool_size: max-pool kernel (= stride) applied to φ and g, e.g. ``(1, 2, 2)``; None keeps all.
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        spatial_dims: int = 3,
        pool_size: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.inner = inner_channels
        self.project = conv(in_channels, 3 * inner_channels, kernel_size=1)
        self.pool = _MAX_POOL[spatial_dims](pool_size, pool_size) if pool_size else nn.Identity()
        self.out = conv(inner_channels, in_channels, kernel_size=1, bias=False)
        self.norm = norm(in_channels)
        nn.init.zeros_(self.norm.weight)  # identity at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *S) -> (N, C, *S)``."""
        theta, keys_values = pointwise(self.project, x).split([self.inner, 2 * self.inner], dim=1)
        keys_values = self.pool(keys_values.unflatten(2, x.shape[2:])).flatten(2)
        phi, g = keys_values.split([self.inner, self.inner], dim=1)
        affinity = torch.bmm(theta.transpose(1, 2), phi)  # (N, L, L')
        attention = F.softmax(affinity * self.inner**-0.5, dim=-1)
        y = torch.bmm(g, attention.transpose(1, 2))  # (N, inner, L)
        return x + self.norm(pointwise(self.out, y).unflatten(2, x.shape[2:]))
