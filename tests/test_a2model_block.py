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
