"""The double attention block against the paper's equations, and the non-local baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from a2model import DoubleAttention, NonLocal, double_attention


def reference_double_attention(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Straight from the equations, one sample and one position at a time (slow, float64)."""
    a, b, v = (t.double().flatten(2) for t in (a, b, v))
    batch, m, positions = a.shape
    n = b.shape[1]
    z = torch.zeros(batch, m, positions, dtype=torch.float64)
    for s in range(batch):
        gather = torch.exp(b[s]) / torch.exp(b[s]).sum(dim=1, keepdim=True)  # each map over positions
        g = torch.zeros(m, n, dtype=torch.float64)
        for j in range(n):
            for pos in range(positions):
                g[:, j] += a[s, :, pos] * gather[j, pos]
        for pos in range(positions):
            weights = torch.exp(v[s, :, pos]) / torch.exp(v[s, :, pos]).sum()  # over the n descriptors
            z[s, :, pos] = g @ weights
    return z


@pytest.mark.parametrize("spatial", [(5, 4), (3, 4, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize(("m", "n"), [(1, 1), (4, 3), (3, 7)])
def test_core_matches_the_equations(spatial: tuple[int, ...], m: int, n: int) -> None:
    gen = torch.Generator().manual_seed(m * 10 + n)
    a = torch.randn(2, m, *spatial, generator=gen)
    b = torch.randn(2, n, *spatial, generator=gen) * 3
    v = torch.randn(2, n, *spatial, generator=gen) * 3
    z = double_attention(a, b, v)
    assert z.shape == (2, m, *spatial)
    torch.testing.assert_close(z.double().flatten(2), reference_double_attention(a, b, v), rtol=1e-5, atol=1e-6)


def test_attention_weights_sum_to_one() -> None:
    # With A = 1 every descriptor is Σ_l softmax(B)_jl = 1, and Z = Σ_j softmax(V)_j · 1 = 1.
    b, v = torch.randn(3, 6, 4, 7, 7), torch.randn(3, 6, 4, 7, 7)
    z = double_attention(torch.ones(3, 2, 4, 7, 7), b, v)
    torch.testing.assert_close(z, torch.ones_like(z))


def test_distribution_selects_descriptors() -> None:
    # A one-hot V picks exactly one global descriptor at each position.
    a = torch.randn(1, 3, 2, 5)
    b = torch.randn(1, 2, 2, 5)
    v = torch.full((1, 2, 2, 5), -1e4)
    v[:, 0, 0] = 1e4
    v[:, 1, 1] = 1e4
    descriptors = torch.einsum("nml,njl->nmj", a.flatten(2), b.flatten(2).softmax(-1))
    z = double_attention(a, b, v)
    torch.testing.assert_close(z[0, :, 0], descriptors[0, :, 0:1].expand(3, 5))
    torch.testing.assert_close(z[0, :, 1], descriptors[0, :, 1:2].expand(3, 5))


@pytest.mark.parametrize(
    ("block", "shape"),
    [
        (lambda: DoubleAttention(8, 4, 6, spatial_dims=2), (2, 8, 6, 5)),
        (lambda: DoubleAttention(8, 4, 6, spatial_dims=3), (2, 8, 3, 6, 5)),
        (lambda: NonLocal(8, 4, spatial_dims=2), (2, 8, 6, 5)),
        (lambda: NonLocal(8, 4, spatial_dims=3), (2, 8, 3, 6, 5)),
        (lambda: NonLocal(8, 4, spatial_dims=3, pool_size=(1, 2, 2)), (2, 8, 3, 6, 4)),
    ],
    ids=["a2-2d", "a2-3d", "nl-2d", "nl-3d", "nl-3d-pooled"],
)
def test_blocks_start_as_identity_and_train(block, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module: nn.Module = block()
    x = torch.randn(shape)
    module.train()
    torch.testing.assert_close(module(x), x, rtol=0, atol=0)
    nn.init.ones_(module.norm.weight)  # leave the identity start: every parameter must get a gradient
    module(x).square().sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_block_matches_core_with_its_projections() -> None:
    torch.manual_seed(1)
    block = DoubleAttention(6, 3, 5, spatial_dims=3).eval()
    nn.init.normal_(block.norm.weight)
    x = torch.randn(2, 6, 2, 3, 4)
    w = block.project.weight.flatten(1)
    projected = torch.einsum("oc,nc...->no...", w, x) + block.project.bias.view(1, -1, 1, 1, 1)
    a, b, v = projected.split([3, 5, 5], dim=1)
    expected = x + block.norm(block.out(double_attention(a, b, v)))
    torch.testing.assert_close(block(x), expected)


def test_nonlocal_attends_over_all_positions() -> None:
    # Against the embedded-Gaussian formula written out with an explicit L × L affinity.
    torch.manual_seed(2)
    block = NonLocal(6, 4, spatial_dims=2).eval()
    nn.init.normal_(block.norm.weight)
    x = torch.randn(1, 6, 3, 4)
    theta, phi, g = block.project(x).flatten(2)[0].split(4)
    attention = torch.softmax(theta.T @ phi / 2.0, dim=1)  # (L, L): row = query
    y = (g @ attention.T).view(1, 4, 3, 4)
    torch.testing.assert_close(block(x), x + block.norm(block.out(y)))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("size", [(7, 7), (5, 9)])
def test_shapes_over_a_grid(batch: int, frames: int, size: tuple[int, int]) -> None:
    x = torch.randn(batch, 16, frames, *size)
    for block in (DoubleAttention(16, 8, 4), NonLocal(16, 8)):
        assert block(x).shape == x.shape


def test_memory_of_the_gather_first_order_is_m_by_n() -> None:
    # The largest intermediate of the core is (N, n, L) or (N, m, n): never (L, L).
    a, b, v = torch.randn(1, 4, 2, 32, 32), torch.randn(1, 3, 2, 32, 32), torch.randn(1, 3, 2, 32, 32)
    sizes: list[int] = []

    class Recorder(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                sizes.append(out.numel())
            return out

    with Recorder():
        double_attention(a, b, v)
    assert max(sizes) <= 4 * 2 * 32 * 32  # L = 2048 positions; an L×L matrix would be 4.2M


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("unused_part", [None, 1])
def test_pointwise_parts_gradients_match_the_convolution(bias: bool, unused_part: int | None) -> None:
    """The copy-free backward (``_PointwiseParts``) against autograd through ``conv3d``, float64."""
    from a2model.attention import pointwise_parts

    torch.manual_seed(0)
    conv = nn.Conv3d(6, 7, kernel_size=1, bias=bias).double()
    x = torch.randn(3, 6, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    sizes = [3, 2, 2]
    weights = [torch.randn(3, size, 24, dtype=torch.float64) for size in sizes]
    used = [k for k in range(len(sizes)) if k != unused_part]

    parts = pointwise_parts(conv, x, sizes)
    sum(float(k + 1) * (parts[k] * weights[k]).sum() for k in used).backward()
    ours = [x.grad, conv.weight.grad, conv.bias.grad if bias else None]
    x.grad, conv.weight.grad = None, None
    if bias:
        conv.bias.grad = None
    expected_parts = conv(x).flatten(2).split(sizes, dim=1)
    sum(float(k + 1) * (expected_parts[k] * weights[k]).sum() for k in used).backward()
    for got, want in zip(ours, [x.grad, conv.weight.grad, conv.bias.grad if bias else None]):
        if want is not None:
            torch.testing.assert_close(got, want)
    for got, want in zip(parts, expected_parts):
        torch.testing.assert_close(got, want.detach())


def test_the_block_backward_matches_autograd_through_convolutions() -> None:
    """Whole-block gradients (input and every parameter) against the same block built from
    ``nn.Conv3d`` calls and ``double_attention`` with plain autograd, float64."""
    torch.manual_seed(0)
    block = DoubleAttention(8, m=4, n=3).double().train()
    nn.init.ones_(block.norm.weight)
    x = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)

    (block(x) * target).sum().backward()
    ours = [x.grad] + [p.grad for p in block.parameters()]
    x.grad = None
    block.zero_grad(set_to_none=True)
    a, b, v = block.project(x).split([4, 3, 3], dim=1)
    ((x + block.norm(block.out(double_attention(a, b, v)))) * target).sum().backward()
    for got, want in zip(ours, [x.grad] + [p.grad for p in block.parameters()]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "device_type, channels_last, route",
    [("cpu", False, "gemm"), ("cpu", True, "gemm"), ("cuda", False, "gemm"), ("cuda", True, "conv")],
)
def test_projections_run_as_a_cudnn_convolution_only_on_channels_last_cuda(device_type, channels_last, route) -> None:
    from a2model.attention import projection_route

    assert projection_route(device_type, channels_last) == route


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last_3d])
def test_both_projection_routes_compute_the_same_parts(memory_format) -> None:
    from a2model.attention import pointwise_parts

    torch.manual_seed(0)
    conv = nn.Conv3d(8, 10, kernel_size=1)
    x = torch.randn(2, 8, 3, 4, 5).contiguous(memory_format=memory_format)
    for gemm, conv_part in zip(pointwise_parts(conv, x, [4, 6], "gemm"), pointwise_parts(conv, x, [4, 6], "conv")):
        torch.testing.assert_close(gemm, conv_part)


def test_the_block_trains_under_bf16_autocast_like_in_fp32() -> None:
    """The GPU config's bf16 autocast, on CPU: the copy-free backward takes bf16 gradients.

    Eval-mode BatchNorm: in training mode it cancels the φ bias exactly, and its gradient would be
    pure rounding noise."""
    torch.manual_seed(0)
    block = DoubleAttention(32, m=8, n=8).eval()
    nn.init.ones_(block.norm.weight)
    x = torch.randn(2, 32, 2, 6, 6, requires_grad=True)
    target = torch.randn(2, 32, 2, 6, 6)
    (block(x) * target).sum().backward()
    reference = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    x.grad = None
    block.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (block(x).float() * target).sum()
    loss.backward()
    for got, want in zip([x.grad] + [p.grad for p in block.parameters()], reference):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.1, atol=0.1 * float(want.abs().max()))


def test_a_per_frame_block_is_the_block_on_each_frame_alone_and_never_mixes_time() -> None:
    """``per_frame``: frame t's output is the block's output on frame t as a 1-frame clip, and changing
    another frame changes nothing at t; the space-time block (same weights) does mix frames."""
    torch.manual_seed(0)
    per_frame = DoubleAttention(16, 8, 4, per_frame=True).double()
    nn.init.normal_(per_frame.norm.weight)  # not the identity
    space_time = DoubleAttention(16, 8, 4).double()
    space_time.load_state_dict(per_frame.state_dict())
    per_frame.eval(), space_time.eval()
    x = torch.randn(2, 16, 5, 6, 7, dtype=torch.float64)
    y = per_frame(x)
    for t in range(5):
        torch.testing.assert_close(per_frame(x[:, :, t : t + 1])[:, :, 0], y[:, :, t], rtol=0, atol=1e-12)
    changed = x.clone()
    changed[:, :, 0] += 1
    torch.testing.assert_close(per_frame(changed)[:, :, 1:], y[:, :, 1:], rtol=0, atol=1e-12)
    assert (space_time(changed)[:, :, 1:] - space_time(x)[:, :, 1:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="per_frame needs clips"):
        DoubleAttention(16, 8, 4, spatial_dims=2, per_frame=True)
