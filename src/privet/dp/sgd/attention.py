"""Multi-head attention as plain linear projections around ``scaled_dot_product_attention``.

``nn.MultiheadAttention`` computes its in-projection inside ``F.multi_head_attention_forward`` with its packed
``in_proj_weight``, so no ``nn.Linear`` is ever called and a per-sample-gradient engine cannot see the layer's
input and output gradient. :func:`attention_forward` is the same computation written so that it can: the packed
in-projection is one call of a *projection function* (by default ``F.linear`` on the module's own weights; the
DP-SGD engine passes one that records ``(input, output gradient)`` like its Linear handler), the output
projection is a call of the ``out_proj`` submodule, and the attention itself is
:func:`torch.nn.functional.scaled_dot_product_attention` (or, with ``need_weights=True``, the explicit softmax
that returns the weights), with PyTorch's mask semantics.

:class:`~privet.dp.sgd.engine.PerSampleClipper` uses this for every ``nn.MultiheadAttention`` on its own (it
overrides the instance's forward while it is attached; no module is replaced, parameters, state dict and
optimizer references are unchanged). :class:`MultiheadAttention` (a subclass of ``nn.MultiheadAttention`` whose
forward is :func:`attention_forward`) and :func:`replace_attention` are for code that wants the module itself,
e.g. to avoid ``nn.MultiheadAttention``'s fused paths; the replacement keeps the very same parameter objects.

Supported: ``batch_first`` either way, unbatched inputs, ``attn_mask`` (2-D or 3-D, bool or float),
``key_padding_mask`` (bool or float), ``is_causal``, dropout, ``need_weights`` and ``average_attn_weights``,
``bias=False``. Not supported (refused by :func:`native_supported` users): ``kdim``/``vdim`` different from
``embed_dim`` (separate q/k/v weights), ``add_bias_kv`` and ``add_zero_attn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from privet.errors import UsageError

__all__ = ["MultiheadAttention", "attention_forward", "native_supported", "project", "replace_attention"]

Projection = Callable[[nn.Module, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def native_supported(module: nn.MultiheadAttention) -> str | None:
    """None if :func:`attention_forward` computes ``module`` exactly; otherwise why not."""
    if not module._qkv_same_embed_dim:
        return "kdim/vdim differ from embed_dim (separate q/k/v projection weights)"
    if module.bias_k is not None or module.bias_v is not None:
        return "add_bias_kv=True"
    if module.add_zero_attn:
        return "add_zero_attn=True"
    return None


def project(module: nn.Module, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The packed in-projection with the module's weights: one matmul for self-attention, as PyTorch does."""
    w, b, e = module.in_proj_weight, module.in_proj_bias, module.embed_dim
    if query is key and key is value:
        q, k, v = F.linear(query, w, b).chunk(3, -1)
        return q, k, v
    if key is value:
        q = F.linear(query, w[:e], None if b is None else b[:e])
        k, v = F.linear(key, w[e:], None if b is None else b[e:]).chunk(2, -1)
        return q, k, v
    ws, bs = w.chunk(3), (None, None, None) if b is None else b.chunk(3)
    return F.linear(query, ws[0], bs[0]), F.linear(key, ws[1], bs[1]), F.linear(value, ws[2], bs[2])


def _float_mask(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """PyTorch's MultiheadAttention mask convention: bool True = not allowed (-inf), float = added to scores."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise UsageError(f"{name} must be bool or floating point, got {mask.dtype}", "Pass a bool or float mask.")
    return mask.to(dtype)


def attention_forward(
    module: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    projection: Projection = project,
) -> tuple[Tensor, Tensor | None]:
    """``nn.MultiheadAttention.forward`` (same arguments, same results) through ``projection`` and ``out_proj``."""
    reason = native_supported(module)
    if reason is not None:
        raise UsageError(
            f"privet's attention path does not support MultiheadAttention with {reason}",
            "Use embed_dim-sized keys and values without add_bias_kv/add_zero_attn.",
        )
    batched = query.dim() == 3
    if not batched:  # unbatched (L, E): a batch of one, batch first
        query, key, value = _same_identity((query, key, value), lambda t: t.unsqueeze(0))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(0)  # (H, L, S) -> (1, H, L, S)
    elif not module.batch_first:
        query, key, value = _same_identity((query, key, value), lambda t: t.transpose(0, 1))
    n, tgt, e = query.shape
    src, heads = key.shape[1], module.num_heads
    head_dim = e // heads
    if e != module.embed_dim:
        raise UsageError(f"expected embedding dimension {module.embed_dim}, got {e}", "Check the input's layout.")
    if key.shape[0] != n or value.shape[:2] != key.shape[:2]:
        raise UsageError(
            f"query {tuple(query.shape)}, key {tuple(key.shape)} and value {tuple(value.shape)} do not match",
            "Key and value need the same batch and sequence sizes as each other, and the query's batch size.",
        )
    q, k, v = projection(module, query, key, value)

    dtype = query.dtype
    padding = _float_mask(key_padding_mask, "key_padding_mask", dtype)
    if is_causal and padding is None and not need_weights:
        mask = None  # the is_causal hint: SDPA's own causal masking, as PyTorch does
    else:
        mask = _float_mask(attn_mask, "attn_mask", dtype)
        if is_causal and mask is None:
            mask = torch.full((tgt, src), float("-inf"), dtype=dtype, device=query.device).triu_(1)
        is_causal = False
    if mask is not None and mask.dim() == 3:  # (N * heads, L, S) or (1, L, S)
        mask = mask.unsqueeze(0) if mask.shape[0] == 1 else mask.view(n, heads, tgt, src)
    if padding is not None:
        padding = padding.view(n, 1, 1, src)
        mask = padding if mask is None else mask + padding

    qh = q.view(n, tgt, heads, head_dim).transpose(1, 2)
    kh = k.view(n, src, heads, head_dim).transpose(1, 2)
    vh = v.view(n, src, heads, head_dim).transpose(1, 2)
    dropout = module.dropout if module.training else 0.0
    weights = None
    if need_weights:
        scores = torch.matmul(qh * math.sqrt(1.0 / head_dim), kh.transpose(-2, -1))
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        if dropout > 0.0:
            attn = F.dropout(attn, p=dropout)
        out = torch.matmul(attn, vh)
        weights = attn.mean(1) if average_attn_weights else attn
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
    out = module.out_proj(out.transpose(1, 2).reshape(n, tgt, e))
    if not batched:
        return out.squeeze(0), None if weights is None else weights.squeeze(0)
    if not module.batch_first:
        out = out.transpose(0, 1)
    return out, weights


def _same_identity(tensors: tuple[Tensor, Tensor, Tensor], fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, ...]:
    """Apply ``fn`` once per distinct tensor, keeping ``query is key`` / ``key is value`` (self-attention)."""
    done: dict[int, Tensor] = {}
    for t in tensors:
        if id(t) not in done:
            done[id(t)] = fn(t)
    return tuple(done[id(t)] for t in tensors)


class MultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose forward is :func:`attention_forward` (in-projection, SDPA, ``out_proj``).

    Same constructor (``kdim``/``vdim`` other than ``embed_dim``, ``add_bias_kv`` and ``add_zero_attn`` are
    refused), same parameters and state dict, same results; :meth:`from_module` converts an existing module
    keeping its parameter objects. ``nn.TransformerEncoderLayer``/``DecoderLayer`` accept it unchanged (in
    evaluation without gradients they may still take PyTorch's fused fast path with these same weights).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            dropout=dropout,
            bias=bias,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
            kdim=kdim,
            vdim=vdim,
            batch_first=batch_first,
            device=device,
            dtype=dtype,
        )
        reason = native_supported(self)
        if reason is not None:
            raise UsageError(
                f"privet's MultiheadAttention does not support {reason}",
                "Use kdim = vdim = embed_dim, add_bias_kv=False and add_zero_attn=False.",
            )

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention) -> MultiheadAttention:
        """A privet MultiheadAttention computing exactly what ``module`` does, sharing its parameter objects."""
        reason = native_supported(module)
        if reason is not None:
            raise UsageError(
                f"cannot replace this MultiheadAttention: {reason}",
                "Keep nn.MultiheadAttention for it (privet's DP-SGD engine then uses its generic vmap path).",
            )
        new = cls(
            module.embed_dim,
            module.num_heads,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            batch_first=module.batch_first,
            device="meta",  # placeholders only: the module's own parameters are put in below
        )
        new.in_proj_weight = module.in_proj_weight
        new.in_proj_bias = module.in_proj_bias
        new.out_proj = module.out_proj
        new.train(module.training)
        return new

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        return attention_forward(
            self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )


def replace_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` (in place) by :class:`MultiheadAttention`.

    The replacement shares the original's parameter objects (an optimizer built before keeps working) and
    computes the same outputs and gradients. A module that cannot be replaced (``kdim``/``vdim`` other than
    ``embed_dim``, ``add_bias_kv``, ``add_zero_attn``) is refused with :class:`~privet.errors.UsageError`.
    Returns ``model`` (or its replacement, when ``model`` itself is an ``nn.MultiheadAttention``).
    Not needed for :class:`~privet.dp.sgd.engine.PerSampleClipper`, which handles ``nn.MultiheadAttention``
    the same way by itself.
    """
    if type(model) is nn.MultiheadAttention:
        return MultiheadAttention.from_module(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.MultiheadAttention:
            setattr(model, name, MultiheadAttention.from_module(child))
        else:
            replace_attention(child)
    return model
