"""privet.dp.sgd.layers: per-sample norms and clipped sums equal explicit per-sample gradients (float64)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privet.dp.sgd import layers
from privet.errors import UsageError

FAST = settings(max_examples=25, deadline=None)


def per_sample_grads(module: nn.Module, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """Explicit per-sample gradients: one autograd call per sample of ``<module(a_i), b_i>``."""
    params = [p for p in module.parameters() if p.requires_grad]
    out = []
    for i in range(a.shape[0]):
        value = (module(a[i : i + 1]) * b[i : i + 1]).sum()
        out.append(torch.autograd.grad(value, params))
    return [torch.stack([g[j] for g in out]) for j in range(len(params))]


def assert_matches(lg: layers.LayerGrads, grads: list[torch.Tensor], c: torch.Tensor) -> None:
    norm_sq = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    torch.testing.assert_close(lg.norm_sq, norm_sq, rtol=1e-9, atol=1e-12)
    got = [g for g in lg.clipped_sum(c) if g is not None]
    assert len(got) == len(grads)
    for g, ref in zip(got, grads, strict=True):
        torch.testing.assert_close(g.reshape(ref.shape[1:]), torch.einsum("b,b...->...", c, ref), rtol=1e-9, atol=1e-12)


@FAST
@given(
    n=st.integers(1, 4),
    seq=st.lists(st.integers(1, 4), max_size=2),
    d_in=st.integers(1, 6),
    d_out=st.integers(1, 6),
    bias=st.booleans(),
    method=st.sampled_from(["auto", "ghost", "materialise"]),
    seed=st.integers(0, 2**16),
)
def test_linear(n: int, seq: list[int], d_in: int, d_out: int, bias: bool, method: str, seed: int) -> None:
    torch.manual_seed(seed)
    module = nn.Linear(d_in, d_out, bias=bias).double()
    a, b = torch.randn(n, *seq, d_in, dtype=torch.float64), torch.randn(n, *seq, d_out, dtype=torch.float64)
    lg = layers.linear_grads(a, b, bias=bias, method=method)
    assert_matches(lg, per_sample_grads(module, a, b), torch.rand(n, dtype=torch.float64))


@FAST
@given(
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    size=st.integers(6, 8),  # width size - 1 >= 5 = the widest dilated kernel
    conv1d=st.booleans(),
    method=st.sampled_from(["auto", "ghost", "materialise"]),
    seed=st.integers(0, 2**16),
)
def test_conv(
    n: int,
    groups: int,
    k: int,
    stride: int,
    padding: int,
    dilation: int,
    size: int,
    conv1d: bool,
    method: str,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    cls = nn.Conv1d if conv1d else nn.Conv2d
    module = cls(2 * groups, 2 * groups, k, stride=stride, padding=padding, dilation=dilation, groups=groups).double()
    shape = (n, 2 * groups, size) if conv1d else (n, 2 * groups, size, size - 1)
    a = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        b = torch.randn_like(module(a))
    lg = layers.conv_grads(module, a, b, method=method)
    assert_matches(lg, per_sample_grads(module, a, b), torch.rand(n, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular", "replicate"])
def test_conv_padding_modes_and_same(mode: str) -> None:
    torch.manual_seed(0)
    module = nn.Conv2d(2, 3, (3, 2), padding="same", padding_mode=mode).double()
    a = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        b = torch.randn_like(module(a))
    for method in ("ghost", "materialise"):
        lg = layers.conv_grads(module, a, b, method=method)
        assert_matches(lg, per_sample_grads(module, a, b), torch.rand(3, dtype=torch.float64))


def test_conv_several_calls_sum_their_gradients() -> None:
    torch.manual_seed(1)
    module = nn.Conv2d(2, 3, 2).double()
    a1, a2 = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        b1, b2 = torch.randn_like(module(a1)), torch.randn_like(module(a2))
    g1, g2 = per_sample_grads(module, a1, b1), per_sample_grads(module, a2, b2)
    for method in ("ghost", "materialise"):
        lg = layers.conv_grads(module, [a1, a2], [b1, b2], method=method)
        assert_matches(lg, [x + y for x, y in zip(g1, g2, strict=True)], torch.rand(3, dtype=torch.float64))


@FAST
@given(
    n=st.integers(1, 4),
    t=st.integers(1, 6),
    vocab=st.integers(1, 5),
    padding=st.booleans(),
    method=st.sampled_from(["auto", "ghost", "materialise"]),
    seed=st.integers(0, 2**16),
)
def test_embedding_index_collisions(n: int, t: int, vocab: int, padding: bool, method: str, seed: int) -> None:
    torch.manual_seed(seed)
    module = nn.Embedding(vocab, 3, padding_idx=0 if padding else None).double()
    idx = torch.randint(0, vocab, (n, t))  # small vocabularies: many repeated indices
    b = torch.randn(n, t, 3, dtype=torch.float64)
    lg = layers.embedding_grads(module, idx, b, method=method)
    assert_matches(lg, per_sample_grads(module, idx, b), torch.rand(n, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(4, 6), (4, 3, 6), (4, 2, 3, 6)])
def test_layer_norm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    module = nn.LayerNorm(shape[-1]).double()
    nn.init.normal_(module.weight)
    a, b = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    assert_matches(layers.layer_norm_grads(module, a, b), per_sample_grads(module, a, b), torch.rand(4).double())
    module2 = nn.LayerNorm(shape[-2:]).double() if len(shape) > 2 else None
    if module2 is not None:
        got = layers.layer_norm_grads(module2, a, b)
        assert_matches(got, per_sample_grads(module2, a, b), torch.rand(4).double())


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (3, 4, 2, 3)])
def test_group_norm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(3)
    module = nn.GroupNorm(2, 4).double()
    a, b = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    assert_matches(layers.group_norm_grads(module, a, b), per_sample_grads(module, a, b), torch.rand(3).double())


def test_frozen_bias_is_left_out() -> None:
    module = nn.LayerNorm(3).double()
    module.bias.requires_grad_(False)
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    lg = layers.layer_norm_grads(module, a, b)
    assert lg.clipped_sum(torch.ones(2, dtype=torch.float64))[1] is None
    assert_matches(lg, per_sample_grads(module, a, b), torch.ones(2, dtype=torch.float64))


def test_choose_ghost_by_cost() -> None:
    assert layers.choose_ghost(1, 10, 10)
    assert layers.choose_ghost(25, 256, 32)  # the MNIST CNN's second conv: few positions, wide
    assert not layers.choose_ghost(196, 64, 16)  # its first conv: many positions, narrow


@pytest.mark.parametrize(
    "bn",
    [nn.BatchNorm1d(4), nn.BatchNorm2d(4), nn.BatchNorm3d(4), nn.SyncBatchNorm(4), nn.BatchNorm2d(4, affine=False)],
)
def test_batch_norm_is_refused(bn: nn.Module) -> None:
    with pytest.raises(UsageError) as caught:
        layers.check_supported(nn.Sequential(nn.Linear(4, 4), nn.Sequential(bn)))
    assert "'1.0'" in caught.value.message and "GroupNorm" in caught.value.hint


def test_replace_batch_norm_picks_a_dividing_group_count() -> None:
    model = nn.Sequential(
        nn.BatchNorm2d(64), nn.Sequential(nn.BatchNorm1d(6, eps=1e-3)), nn.BatchNorm2d(7, affine=False)
    )
    layers.replace_batch_norm(model)
    assert [type(m) for m in (model[0], model[1][0], model[2])] == [nn.GroupNorm] * 3
    assert (model[0].num_groups, model[1][0].num_groups, model[2].num_groups) == (32, 6, 7)
    assert model[1][0].eps == 1e-3 and not model[2].affine
    layers.check_supported(model)
    assert isinstance(layers.replace_batch_norm(nn.BatchNorm1d(8)), nn.GroupNorm)


@pytest.mark.parametrize("method", ["ghost", "materialise"])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_chunking_does_not_change_the_result(method: str, groups: int) -> None:
    torch.manual_seed(7)
    module = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups).double()
    a = [torch.randn(9, 4, 8, 7, dtype=torch.float64) for _ in range(2)]  # two calls of the module
    with torch.no_grad():
        b = [torch.randn_like(module(x)) for x in a]
    c = torch.rand(9, dtype=torch.float64)
    whole = layers.conv_grads(module, a, b, method=method, chunk_bytes=1 << 40)
    for chunk_bytes in (1, 20_000):  # the floor (the output's size, 6912 bytes): one sample per chunk; a few
        chunked = layers.conv_grads(module, a, b, method=method, chunk_bytes=chunk_bytes)
        torch.testing.assert_close(chunked.norm_sq, whole.norm_sq, rtol=1e-12, atol=0)
        for got, ref in zip(chunked.clipped_sum(c), whole.clipped_sum(c), strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
