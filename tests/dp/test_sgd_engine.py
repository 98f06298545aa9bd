"""PerSampleClipper: clipped sums and per-sample norms equal a naive per-example loop, for every layer type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from privet.dp.sgd import PerSampleClipper, replace_batch_norm
from privet.errors import UsageError


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Exactness: this file's models are float64; the default is restored so other tests are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def naive(model: nn.Module, x, y, clip: float, loss_fn) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per example: forward, backward, clip the flattened full-model gradient to ``clip``, sum."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    norms = []
    for i in range(len(y)):
        grads = torch.autograd.grad(
            loss_fn(_call(model, _take(x, i)), y[i : i + 1]), list(params.values()), allow_unused=True
        )
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values(), strict=True)]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(norm)
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for name, g in zip(params, grads, strict=True):
            total[name] += factor * g
    return total, torch.stack(norms)


def _take(x, i):
    if isinstance(x, tuple):
        return tuple(t[i : i + 1] for t in x)
    return x[i : i + 1]


def _call(model, x):
    return model(*x) if isinstance(x, tuple) else model(x)


def check(model: nn.Module, x, classes: int = 3, loss_reduction: str = "mean") -> PerSampleClipper:
    """Compare the engine with the naive loop; the bound is the median norm so some samples clip and some don't."""
    n = (x[0] if isinstance(x, tuple) else x).shape[0]
    y = torch.randint(0, classes, (n,))
    ce = nn.CrossEntropyLoss()

    def per_example_loss(out, target):
        return ce(out, target)

    model.eval() if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()) else None
    _, ref_norms = naive(model, x, y, 1e9, per_example_loss)
    clip = float(ref_norms.median())
    expected, _ = naive(model, x, y, clip, per_example_loss)
    clipped = ref_norms > clip + 1e-9
    assert clipped.any() and (~clipped).any()
    model.zero_grad(set_to_none=True)
    model.train()
    clipper = PerSampleClipper(model, clip, loss_reduction=loss_reduction)
    try:
        out = _call(model, x)
        loss = nn.CrossEntropyLoss(reduction=loss_reduction)(out, y)
        loss.backward()
        torch.testing.assert_close(clipper.last_norms, ref_norms, rtol=1e-5, atol=1e-9)
        for name, p in model.named_parameters():
            if not p.requires_grad:
                assert p.grad is None, name
                continue
            assert p.grad is not None, name
            rel = (p.grad - expected[name]).norm() / expected[name].norm().clamp_min(1e-12)
            assert rel < 1e-5, (name, float(rel))
    finally:
        clipper.remove()
    return clipper


class Head(nn.Module):
    """A sequence model's head: mean over positions, then a linear classifier."""

    def __init__(self, body: nn.Module, width: int, *, flat: bool = False) -> None:
        super().__init__()
        self.body, self.out, self.flat = body, nn.Linear(width, 3), flat

    def forward(self, x):
        h = self.body(x)
        return self.out(h.flatten(1) if self.flat else h.mean(1))


def test_linear_2d() -> None:
    torch.manual_seed(0)
    check(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), torch.randn(8, 5))


@pytest.mark.parametrize(("seq", "d_in", "d_out"), [(3, 6, 5), (9, 2, 3)])  # ghost, materialised
def test_linear_3d_ghost_and_materialised(seq: int, d_in: int, d_out: int) -> None:
    torch.manual_seed(1)
    check(Head(nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(inplace=True)), d_out), torch.randn(6, seq, d_in))


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(2, 4, 3),
        lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1),
        lambda: nn.Conv2d(2, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
        lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False),
        lambda: nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect"),
        lambda: nn.Conv2d(2, 40, 2, stride=2),  # ghost: few positions, wide layer
    ],
)
def test_conv2d(conv) -> None:
    torch.manual_seed(2)
    layer = conv()
    body = nn.Sequential(layer, nn.ReLU())
    x = torch.randn(6, layer.in_channels, 7, 6)
    with torch.no_grad():
        width = body(x[:1]).numel()
    check(Head(body, width, flat=True), x)


@pytest.mark.parametrize(
    "conv", [lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), lambda: nn.Conv1d(4, 4, 2, groups=4)]
)
def test_conv1d(conv) -> None:
    torch.manual_seed(3)
    layer = conv()
    x = torch.randn(6, layer.in_channels, 9)
    with torch.no_grad():
        width = layer(x[:1]).numel()
    check(Head(layer, width, flat=True), x)


def test_embedding_with_repeated_indices_and_padding() -> None:
    torch.manual_seed(4)
    model = Head(nn.Embedding(5, 4, padding_idx=0), 4)
    x = torch.tensor([[1, 1, 2, 0], [3, 3, 3, 3], [0, 0, 1, 4], [2, 4, 2, 4], [1, 2, 3, 4], [4, 4, 0, 1]])
    check(model, x)


def test_embedding_materialised_when_long() -> None:
    torch.manual_seed(4)
    model = Head(nn.Embedding(3, 2), 2)  # T^2 = 49 > V d = 6: per-sample gradients are formed
    check(model, torch.randint(0, 3, (6, 7)))


def test_layer_norm_and_group_norm() -> None:
    torch.manual_seed(5)
    check(Head(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6)), 6), torch.randn(6, 3, 4))
    check(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)), torch.randn(6, 4))
    body = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.ReLU())
    check(Head(body, 4 * 3 * 3, flat=True), torch.randn(6, 2, 5, 5))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention(batch_first: bool) -> None:
    torch.manual_seed(6)

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=batch_first)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            h = x if batch_first else x.transpose(0, 1)
            h = self.attn(h, h, h, need_weights=False)[0]
            return self.out((h if batch_first else h.transpose(0, 1)).mean(1))

    clipper = check(Attn(), torch.randn(6, 5, 4))
    assert clipper.units == {"attn": "attention", "attn.out_proj": "linear", "out": "linear"}


def test_transformer_encoder_layer() -> None:
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    class Encoder(nn.Module):  # batch first throughout: every unit's input has the batch in dimension 0
        def __init__(self) -> None:
            super().__init__()
            self.body, self.out = layer, nn.Linear(8, 3)

        def forward(self, x):
            return self.out(self.body(x).mean(1))

    clipper = check(Encoder(), torch.randn(6, 5, 8))
    # Native path: the in-projection is a Linear-like unit, out_proj a Linear unit; nothing through vmap.
    assert clipper.units["body.self_attn"] == "attention"
    assert clipper.units["body.self_attn.out_proj"] == "linear"
    assert set(clipper.units.values()) == {"attention", "linear", "layernorm"}


def test_transformer_decoder_layer_cross_attention_and_masks() -> None:
    torch.manual_seed(14)

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.out = nn.Linear(8, 3)

        def forward(self, tgt, memory, padding):
            causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=tgt.dtype)
            h = self.body(tgt, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=padding)
            return self.out(h.mean(1))

    padding = torch.zeros(6, 4)
    padding[::2, -1] = float("-inf")  # per-sample padding of the memory
    clipper = check(Decoder(), (torch.randn(6, 5, 8), torch.randn(6, 4, 8), padding))
    assert clipper.units["body.multihead_attn"] == "attention"  # query from tgt, key = value = memory
    assert "generic" not in clipper.units.values() and "attention_vmap" not in clipper.units.values()


def test_attention_with_frozen_in_projection() -> None:
    torch.manual_seed(15)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    layer.self_attn.in_proj_weight.requires_grad_(False)
    layer.self_attn.in_proj_bias.requires_grad_(False)
    check(Head(layer, 8), torch.randn(6, 5, 8))


def test_attention_the_native_path_cannot_compute_uses_vmap() -> None:
    torch.manual_seed(16)

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True, add_bias_kv=True)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            return self.out(self.attn(x, x, x, need_weights=False)[0].mean(1))

    clipper = check(Attn(), torch.randn(6, 5, 4))
    assert clipper.units["attn"] == "attention_vmap"


def test_custom_module_uses_torch_func_fallback() -> None:
    torch.manual_seed(8)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.randn(4))
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(x * self.scale).sin()

    model = nn.Sequential(Scaled(), nn.Linear(4, 3))
    clipper = check(model, torch.randn(7, 4))
    assert clipper.units == {"0": "generic", "1": "linear"}


def test_module_called_twice_accumulates() -> None:
    torch.manual_seed(9)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.conv = nn.Conv1d(4, 4, 1)
            self.norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            h = self.lin(self.lin(x).tanh())
            h = self.conv(self.conv(h.unsqueeze(2))).squeeze(2)
            return self.out(self.norm(self.norm(h) * 2))

    check(Twice(), torch.randn(6, 4))


def test_sum_reduction() -> None:
    torch.manual_seed(10)
    check(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), torch.randn(6, 5), loss_reduction="sum")


def test_frozen_parameters_are_ignored() -> None:
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    model[2].bias.requires_grad_(False)
    model[3].weight.requires_grad_(False)
    check(model, torch.randn(6, 5))
    assert model[0].weight.grad is None and model[2].bias.grad is None


def test_batch_norm_is_refused_with_a_hint_and_can_be_replaced() -> None:
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(UsageError) as caught:
        PerSampleClipper(model, 1.0)
    assert "'1'" in caught.value.message and "BatchNorm2d" in caught.value.message
    assert "GroupNorm" in caught.value.hint and "replace_batch_norm" in caught.value.hint
    replace_batch_norm(model)
    assert isinstance(model[1], nn.GroupNorm) and model[1].num_groups == 6
    PerSampleClipper(model, 1.0).remove()


def test_shared_parameter_across_modules_is_refused() -> None:
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    with pytest.raises(UsageError, match="shared"):
        PerSampleClipper(nn.Sequential(a, b), 1.0)


def test_parameter_used_outside_its_module_is_refused() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 3)

        def forward(self, x):
            return self.emb(x).mean(1) @ self.emb.weight.t()

    model = Tied()
    PerSampleClipper(model, 1.0)
    with pytest.raises(UsageError, match="unclipped"):
        model(torch.randint(0, 5, (4, 2))).sum().backward()


def test_batch_folded_into_another_dimension_is_refused() -> None:
    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.lin = nn.Embedding(5, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(self.emb(x).reshape(-1, 3))

    model = Folded()
    PerSampleClipper(model, 1.0)
    with pytest.raises(UsageError, match="batch sizes"):
        model(torch.randint(0, 5, (4, 2))).sum().backward()


def test_no_grad_forward_and_remove_restore_the_model() -> None:
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    x = torch.randn(4, 3)
    before = model(x).detach()
    clipper = PerSampleClipper(model, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    assert not any(u.calls for u in clipper._units)
    clipper.remove()
    assert "forward" not in model[0].__dict__
    model(x).sum().backward()  # ordinary gradients again: the leak hooks are gone
    assert model[0].weight.grad is not None


def test_gradients_accumulate_over_backward_passes_and_empty_batches_work() -> None:
    torch.manual_seed(13)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    PerSampleClipper(model, 0.1, loss_reduction="sum")
    x = torch.randn(4, 1, 4, 4)
    model(x).sum().backward()
    once = [p.grad.clone() for p in model.parameters()]
    model(x).sum().backward()
    for p, g in zip(model.parameters(), once, strict=True):
        torch.testing.assert_close(p.grad, 2 * g)
    model.zero_grad(set_to_none=True)
    model(x[:0]).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_invalid_arguments() -> None:
    model = nn.Linear(2, 2)
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(UsageError):
            PerSampleClipper(model, bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="loss_reduction"):
        PerSampleClipper(model, 1.0, loss_reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="scale_grad_by_freq"):
        PerSampleClipper(nn.Embedding(3, 2, scale_grad_by_freq=True), 1.0)
