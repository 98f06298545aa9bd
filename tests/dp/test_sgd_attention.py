"""privet.dp.sgd.attention: the SDPA-based MultiheadAttention equals nn.MultiheadAttention (float64, 1e-10)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privet.dp.sgd import MultiheadAttention, replace_attention
from privet.errors import UsageError

E, HEADS, N, L, S = 8, 2, 3, 5, 4


def _pair(batch_first: bool, bias: bool = True, dropout: float = 0.0) -> tuple[nn.MultiheadAttention, nn.Module]:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, HEADS, dropout=dropout, bias=bias, batch_first=batch_first, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    mine = MultiheadAttention(E, HEADS, dropout=dropout, bias=bias, batch_first=batch_first, dtype=torch.float64)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def _inputs(batch_first: bool, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def make(length: int) -> torch.Tensor:
        shape = (N, length, E) if batch_first else (length, N, E)
        return torch.randn(shape, dtype=torch.float64, requires_grad=True)

    q = make(L)
    if kind == "self":
        return q, q, q
    k = make(S)
    return (q, k, k) if kind == "kv" else (q, k, make(S))


_GEN = torch.Generator().manual_seed(0)
_PADDING = torch.tensor([[False] * (L - 1) + [True], [False] * L, [True] + [False] * (L - 1)])
MASKS = {
    "none": {},
    "bool_attn": {"attn_mask": torch.rand(L, L, generator=_GEN) > 0.6},
    "float_attn_3d": {"attn_mask": torch.randn(N * HEADS, L, L, dtype=torch.float64, generator=_GEN)},
    "padding": {"key_padding_mask": _PADDING},
    "causal": {"attn_mask": nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64), "is_causal": True},
    "causal_padding": {
        "attn_mask": nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64),
        "is_causal": True,
        "key_padding_mask": torch.tensor([[0.0] * (L - 1) + [float("-inf")]] * N, dtype=torch.float64),
    },
}


def _compare(ref: nn.Module, mine: nn.Module, args: tuple, kwargs: dict) -> None:
    out_ref, w_ref = ref(*args, **kwargs)
    out_mine, w_mine = mine(*args, **kwargs)
    torch.testing.assert_close(out_mine, out_ref, rtol=0, atol=1e-10)
    if w_ref is None:
        assert w_mine is None
    else:
        torch.testing.assert_close(w_mine, w_ref, rtol=0, atol=1e-10)
    upstream = torch.randn_like(out_ref)
    inputs = [t for t in dict.fromkeys(args) if t.requires_grad]
    g_ref = torch.autograd.grad(out_ref, [*inputs, *ref.parameters()], upstream)
    g_mine = torch.autograd.grad(out_mine, [*inputs, *mine.parameters()], upstream)
    for a, b in zip(g_mine, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("need_weights", [False, True])
def test_same_outputs_and_gradients_self_attention(batch_first: bool, mask: str, need_weights: bool) -> None:
    ref, mine = _pair(batch_first)
    torch.manual_seed(1)
    _compare(ref, mine, _inputs(batch_first, "self"), {**MASKS[mask], "need_weights": need_weights})


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["kv", "qkv"])
@pytest.mark.parametrize("bias", [True, False])
def test_same_outputs_and_gradients_cross_attention(batch_first: bool, kind: str, bias: bool) -> None:
    ref, mine = _pair(batch_first, bias=bias)
    torch.manual_seed(2)
    padding = torch.tensor([[False] * (S - 1) + [True]] * N)
    _compare(ref, mine, _inputs(batch_first, kind), {"key_padding_mask": padding, "need_weights": False})
    _compare(ref, mine, _inputs(batch_first, kind), {"need_weights": True, "average_attn_weights": False})


def test_unbatched_input() -> None:
    ref, mine = _pair(True)
    x = torch.randn(L, E, dtype=torch.float64, requires_grad=True)
    _compare(ref, mine, (x, x, x), {"need_weights": False, "key_padding_mask": torch.tensor([False] * L)})


def test_dropout_only_in_training() -> None:
    ref, mine = _pair(True, dropout=0.5)
    x = torch.randn(N, L, E, dtype=torch.float64)
    ref.eval(), mine.eval()
    torch.testing.assert_close(mine(x, x, x)[0], ref(x, x, x)[0], rtol=0, atol=1e-10)
    mine.train()
    a, b = mine(x, x, x, need_weights=False)[0], mine(x, x, x, need_weights=False)[0]
    assert not torch.allclose(a, b)


def test_replace_attention_keeps_parameters_and_state_dict() -> None:
    torch.manual_seed(3)
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False
    ).double()
    x = torch.randn(N, L, E, dtype=torch.float64)
    before = model(x)
    params = list(model.parameters())
    keys = list(model.state_dict())
    assert replace_attention(model) is model
    assert all(type(layer.self_attn) is MultiheadAttention for layer in model.layers)
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-10)
    model.eval()  # the eval fast-path checks of TransformerEncoder(Layer) read the attention's attributes
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-10)
        padding = torch.zeros(N, L, dtype=torch.bool)
        padding[0, -1] = True
        model(x, src_key_padding_mask=padding)
    root = replace_attention(nn.MultiheadAttention(E, HEADS))
    assert type(root) is MultiheadAttention


def test_unsupported_configurations_are_refused() -> None:
    with pytest.raises(UsageError, match="kdim"):
        replace_attention(nn.Sequential(nn.MultiheadAttention(E, HEADS, kdim=3, vdim=3)))
    with pytest.raises(UsageError, match="add_bias_kv"):
        MultiheadAttention(E, HEADS, add_bias_kv=True)
    with pytest.raises(UsageError, match="add_zero_attn"):
        MultiheadAttention.from_module(nn.MultiheadAttention(E, HEADS, add_zero_attn=True))
