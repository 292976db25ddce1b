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


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]) -> list[torch.Tensor]:
    """``W_part·X + b_part`` for each row block of ``weight``: one batched GEMM each, the weight
    broadcast over the batch, every output its own contiguous ``(N, size, L)`` tensor."""
    biases = bias.split(sizes) if bias is not None else [None] * len(sizes)
    parts = []
    for w, b in zip(weight.split(sizes), biases):
        y = torch.bmm(w.expand(x.shape[0], -1, -1), x)
        parts.append(y if b is None else y.add_(b[:, None]))
    return parts


class _PointwiseParts(torch.autograd.Function):
    """``_project`` with a backward that is GEMMs on the same (N, C, L) layout: no transposed or
    concatenated activation copies. ``dX = Σ W_partᵀ·dY_part`` accumulates in place
    (``baddbmm_``) instead of concatenating the parts' gradients; ``dW``, ``db`` are reduced over
    the batch (weight-sized)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]):
        ctx.save_for_backward(x, weight)
        ctx.sizes, ctx.has_bias = sizes, bias is not None
        return tuple(_project(x, weight, bias, sizes))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: torch.Tensor | None):
        x, weight = ctx.saved_tensors
        dtype = next(g.dtype for g in grads if g is not None)  # bf16 when the forward ran under autocast
        x_t, grad_x, grad_w, grad_b = x.to(dtype).transpose(1, 2), None, [], []
        for w, g in zip(weight.split(ctx.sizes), grads):
            if g is None:  # a part that the loss does not use
                grad_w.append(torch.zeros_like(w))
                grad_b.append(w.new_zeros(w.shape[0]))
                continue
            wt = w.t().to(dtype).expand(x.shape[0], -1, -1)
            grad_x = torch.bmm(wt, g) if grad_x is None else grad_x.baddbmm_(wt, g)
            grad_w.append(torch.bmm(g, x_t).sum(0, dtype=weight.dtype))
            grad_b.append(g.sum((0, 2), dtype=weight.dtype))
        grad_x = torch.zeros_like(x) if grad_x is None else grad_x.to(x.dtype)
        return grad_x, torch.cat(grad_w), torch.cat(grad_b) if ctx.has_bias else None, None


def projection_route(device_type: str, channels_last: bool) -> str:
    """How a 1×1 projection runs on a device: ``"conv"`` or ``"gemm"``.

    On CUDA with a channels-last input, the 1×1 convolution is one cuDNN GEMM on the NDHWC layout
    and its output flattens to (N, C, L) without a copy, so the convolution is used; everywhere
    else (CPU, channels-first CUDA) batched GEMMs on (N, C, L) (``_PointwiseParts``) are.
    """
    return "conv" if device_type == "cuda" and channels_last else "gemm"


def _is_channels_last(x: torch.Tensor) -> bool:
    memory_format = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.dim() in (4, 5) and x.is_contiguous(memory_format=memory_format) and not x.is_contiguous()


def pointwise_parts(
    conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor, sizes: list[int], route: str | None = None
) -> list[torch.Tensor]:
    """``conv(x).flatten(2).split(sizes, dim=1)`` for a 1×1 ``conv``: ``(N, C_in, *S)`` → ``(N, size, L)`` each.

    ``route`` (default ``projection_route`` of ``x``): ``"gemm"`` runs batched GEMMs on the
    (N, C, L) layout, the weight broadcast over the batch: ``torch.matmul(W, X)`` would fold the
    batch through transposed copies of X and of the result, splitting one product would hand the
    softmaxes non-contiguous inputs and make autograd concatenate the parts' gradients, and a CPU
    convolution's backward is several times slower than a GEMM's. With gradients on,
    ``_PointwiseParts`` keeps the backward copy-free; without (inference, ``torch.export``) the
    same GEMMs run as plain ops. ``"conv"`` is the convolution itself.
    """
    route = route or projection_route(x.device.type, _is_channels_last(x))
    if route == "conv":
        return list(conv(x).flatten(2).split(sizes, dim=1))
    flat, weight = x.flatten(2), conv.weight.flatten(1)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return list(_PointwiseParts.apply(flat, weight, conv.bias, list(sizes)))
    return _project(flat, weight, conv.bias, list(sizes))


def pointwise(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution as one batched GEMM: ``(N, C_in, *S) -> (N, C_out, L)``, ``conv(x).flatten(2)``."""
    return pointwise_parts(conv, x, [conv.out_channels])[0]


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
    # Gᵀ = softmax(B)·Aᵀ rather than G = A·softmax(B)ᵀ: both gradients then come out of their GEMMs
    # in the layouts the softmax and the projection read, (N, n, L) and (N, m, L), without copies.
    descriptors_t = torch.bmm(gather_maps, a.flatten(2).transpose(1, 2))  # (N, n, m)
    distribution = F.softmax(v.flatten(2), dim=1)  # (N, n, L), sums to 1 over n at each position
    return torch.bmm(descriptors_t.transpose(1, 2), distribution).unflatten(2, spatial)  # (N, m, *S)


def per_frame_double_attention(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``double_attention`` within each frame of clips ``(N, C, T, H, W)``: every frame gathers its own
    n descriptors (softmax over its H·W positions) and distributes only them, so nothing crosses time."""

    def frames(x: torch.Tensor) -> torch.Tensor:  # (N, C, T, H, W) -> (N·T, C, H, W)
        return x.transpose(1, 2).flatten(0, 1)

    z = double_attention(frames(a), frames(b), frames(v))  # (N·T, m, H, W)
    return z.unflatten(0, (a.shape[0], a.shape[2])).transpose(1, 2)  # (N, m, T, H, W)


class DoubleAttention(nn.Module):
    """``Y = X + BN(W_out(double_attention(φ(X), θ(X), ρ(X))))`` for 2-D or 3-D feature maps.

    The three 1×1 projections φ (m channels), θ and ρ (n channels each) are one fused convolution.

    Args:
        in_channels: c, the channels of X (and of Y).
        m: channels of each global descriptor.
        n: number of global descriptors (gather maps).
        spatial_dims: 2 for ``(N, C, H, W)``, 3 for ``(N, C, T, H, W)``.
        per_frame: on clips, attend within each frame only (``per_frame_double_attention``): the
            ablation's control for the block's reach across time.
    """

    def __init__(self, in_channels: int, m: int, n: int, spatial_dims: int = 3, per_frame: bool = False) -> None:
        super().__init__()
        if per_frame and spatial_dims != 3:
            raise ValueError("per_frame needs clips (spatial_dims=3)")
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.m, self.n, self.per_frame = m, n, per_frame
        self.project = conv(in_channels, m + 2 * n, kernel_size=1)
        self.out = conv(m, in_channels, kernel_size=1, bias=False)
        self.norm = norm(in_channels)
        nn.init.zeros_(self.norm.weight)  # identity at init

    def projections(self, x: torch.Tensor) -> list[torch.Tensor]:
        """φ(X), θ(X), ρ(X) of ``x`` ``(N, C, *S)``: ``(N, m, L)``, ``(N, n, L)``, ``(N, n, L)``."""
        return pointwise_parts(self.project, x, [self.m, self.n, self.n])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *S) -> (N, C, *S)``."""
        a, b, v = (p.unflatten(2, x.shape[2:]) for p in self.projections(x))
        attend = per_frame_double_attention if self.per_frame else double_attention
        z = pointwise(self.out, attend(a, b, v))  # (N, C, L)
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
        theta, keys_values = pointwise_parts(self.project, x, [self.inner, 2 * self.inner])
        keys_values = self.pool(keys_values.unflatten(2, x.shape[2:])).flatten(2)
        phi, g = keys_values.split([self.inner, self.inner], dim=1)
        affinity = torch.bmm(theta.transpose(1, 2), phi)  # (N, L, L')
        attention = F.softmax(affinity * self.inner**-0.5, dim=-1)
        y = torch.bmm(g, attention.transpose(1, 2))  # (N, inner, L)
        return x + self.norm(pointwise(self.out, y).unflatten(2, x.shape[2:]))
