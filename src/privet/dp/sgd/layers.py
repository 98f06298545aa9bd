"""Per-sample gradient norms and clipped gradient sums, per layer type, without per-sample gradients where cheaper.

Every function here takes what a layer saw in one batch: its input activations ``a`` (batch dimension first) and
the gradient ``b`` of the loss with respect to its output (same batch dimension), and returns a
:class:`LayerGrads`: the per-sample squared gradient norm of the layer's trainable parameters (``norm_sq``, shape
``[B]``) and a way to form the clipped sum ``sum_i c_i g_i`` for per-sample factors ``c`` (shape ``[B]``) without
a second backward pass.

How each layer type is handled ("ghost" = norms from Gram matrices, never forming per-sample gradients;
"materialised" = per-sample gradients formed with one batched matmul/einsum; the choice is made per layer and per
batch by cost, Bu et al. 2022 "book-keeping" with mixed ghost clipping):

Linear
    With 2-D input ``[B, d_in]``: ``||g_i||^2 = ||a_i||^2 ||b_i||^2`` (always ghost). With sequence dimensions
    ``[B, T..., d]`` (flattened to ``T``): ghost norm ``sum_{t,t'} (a_t . a_t')(b_t . b_t')`` costs about
    ``B T^2 (d_in + d_out)``, materialising ``G_i = b_i^T a_i`` costs ``B T d_in d_out``; ghost is chosen when
    ``T (d_in + d_out) <= d_in d_out`` (it also needs less memory then). The clipped sum is the ordinary
    weight-gradient matmul applied to ``c``-scaled ``b`` (ghost) or ``sum_i c_i G_i`` (materialised). The bias
    gradient of a sample is ``sum_t b_t`` (always formed: it is small).
Conv1d / Conv2d
    The input is unfolded (im2col; Conv1d as a Conv2d of height 1; non-zero padding modes and string padding by
    padding explicitly first), giving ``[B, groups, C_in/groups * k, L]``; then the same ghost-or-materialise
    choice with ``T = L`` output positions, per group. Stride, padding, dilation and groups are supported. The
    clipped sum in ghost mode is the convolution's own weight-gradient kernel
    (``aten.convolution_backward`` with only the weight output) on ``c``-scaled ``b``.
Embedding
    ``||g_i||^2 = sum_{t,t'} [x_t == x_t'] (b_t . b_t')`` (index collisions, ghost) when ``T^2 <= V d``, else
    per-sample gradients by ``index_add``. Positions equal to ``padding_idx`` get no gradient, as in PyTorch.
    ``scale_grad_by_freq`` (batch-dependent scaling) and ``sparse`` are refused.
LayerNorm / GroupNorm
    Per-sample gradients are cheap and always formed: ``weight_i = sum(x_hat * b)`` over the non-parameter
    dimensions, ``bias_i = sum(b)``, with ``x_hat`` recomputed from ``a`` by the un-affine normalisation.
Everything else with parameters
    :func:`materialised_grads` takes per-sample gradients computed by the engine with ``torch.func`` (the module
    is run under ``vmap`` with its parameters expanded per sample, so one ordinary backward pass yields them).

BatchNorm mixes samples of a batch, so per-sample gradients are not defined: :func:`check_supported` refuses it
and :func:`replace_batch_norm` swaps it for GroupNorm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from privet.errors import UsageError

__all__ = [
    "LayerGrads",
    "check_supported",
    "choose_ghost",
    "conv_grads",
    "embedding_grads",
    "group_norm_grads",
    "group_norm_per_sample",
    "layer_norm_grads",
    "layer_norm_per_sample",
    "linear_grads",
    "materialised_grads",
    "replace_batch_norm",
]

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)

CONV_CHUNK_BYTES = 4 << 20
"""Budget for the temporaries formed a chunk of samples at a time (a convolution's unfolded input and Gram
matrices in :func:`conv_grads`, the scaled rows of a weight-gradient matmul)."""


def _chunk_rows(n: int, per_sample_bytes: int, budget: int) -> int:
    return max(1, min(n, budget // max(1, per_sample_bytes)))


class LayerGrads:
    """One layer's per-sample squared norms and its clipped-sum recipe for one batch.

    ``norm_sq`` has shape ``[B]``; :meth:`clipped_sum` returns one gradient per parameter (in the order the
    producing function documents, ``None`` for a parameter that is not trainable).
    """

    __slots__ = ("_clip", "norm_sq")

    def __init__(self, norm_sq: Tensor, clip: Callable[[Tensor], list[Tensor | None]]) -> None:
        self.norm_sq = norm_sq
        self._clip = clip

    def clipped_sum(self, c: Tensor) -> list[Tensor | None]:
        """``sum_i c[i] * g_i`` for each parameter, ``c`` of shape ``[B]``."""
        return self._clip(c)


def _expand(c: Tensor, like: Tensor) -> Tensor:
    return c.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _sq(x: Tensor) -> Tensor:
    """Per-row squared L2 norm of ``x`` flattened after the batch dimension (one fused pass, no temporary)."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).square()


def _weighted(c: Tensor, per_sample: Tensor) -> Tensor:
    """``sum_i c_i per_sample[i]`` (one gemv)."""
    flat = per_sample.reshape(per_sample.shape[0], -1)
    return (c.to(flat.dtype) @ flat).view(per_sample.shape[1:])


def _weighted_outer(c: Tensor, b3: Tensor, a3: Tensor) -> Tensor:
    """``sum_i c_i b3[i]^T a3[i]`` (the weight-gradient matmul on ``c``-scaled rows): the narrower of ``a`` and
    ``b`` is scaled, a chunk of samples at a time, so the temporary stays under :data:`CONV_CHUNK_BYTES`."""
    n, t, d_out = b3.shape
    d_in = a3.shape[2]
    scale_b = d_out <= d_in
    c = c.to(b3.dtype)
    rows = _chunk_rows(n, t * min(d_in, d_out) * b3.element_size(), CONV_CHUNK_BYTES)
    out: Tensor | None = None
    for start in range(0, n, rows):
        bb, aa, cc = b3[start : start + rows], a3[start : start + rows], c[start : start + rows].view(-1, 1, 1)
        if scale_b:
            bb = bb * cc
        else:
            aa = aa * cc
        lhs, rhs = bb.reshape(-1, d_out).t(), aa.reshape(-1, d_in)
        out = lhs @ rhs if out is None else out.addmm_(lhs, rhs)
    assert out is not None
    return out


def choose_ghost(t: int, d_in: int, d_out: int) -> bool:
    """True when the ghost norm (Gram matrices, ``~T^2 (d_in + d_out)``) is no dearer than materialising."""
    return t * (d_in + d_out) <= d_in * d_out


def linear_grads(a: Tensor, b: Tensor, *, weight: bool = True, bias: bool = True, method: str = "auto") -> LayerGrads:
    """Linear layer ``y = a W^T + bias``: ``a`` is ``[B, ..., d_in]``, ``b`` is ``[B, ..., d_out]``.

    ``method`` is ``"auto"`` (by cost), ``"ghost"`` or ``"materialise"``. Clipped sum order: ``[weight, bias]``.
    """
    n = b.shape[0]
    a3 = a.reshape(n, -1, a.shape[-1])
    b3 = b.reshape(n, -1, b.shape[-1])
    t, d_in, d_out = a3.shape[1], a3.shape[2], b3.shape[2]
    if t == 1:  # one position per sample: rank-one per-sample gradients, norms from row norms
        b_sq = _sq(b3)
        norm_sq = _sq(a3) * b_sq if weight else b3.new_zeros(n)
        if bias:
            norm_sq = norm_sq + b_sq
        b2 = b3.reshape(n, d_out)

        def clip_rows(c: Tensor) -> list[Tensor | None]:
            return [_weighted_outer(c, b3, a3) if weight else None, _weighted(c, b2) if bias else None]

        return LayerGrads(norm_sq, clip_rows)
    norm_sq = b3.new_zeros(n)
    w_sum: Callable[[Tensor], Tensor | None] = lambda c: None  # noqa: E731
    if weight:
        ghost = method == "ghost" or (method == "auto" and choose_ghost(t, d_in, d_out))
        if ghost:
            norm_sq = norm_sq + (torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(b3, b3.transpose(1, 2))).sum((1, 2))

            def w_sum(c: Tensor) -> Tensor:
                return _weighted_outer(c, b3, a3)

        else:
            g = torch.bmm(b3.transpose(1, 2), a3)  # [B, d_out, d_in]
            norm_sq = norm_sq + _sq(g)

            def w_sum(c: Tensor) -> Tensor:
                return _weighted(c, g)

    bias_g = b3.sum(1) if bias else None
    if bias_g is not None:
        norm_sq = norm_sq + _sq(bias_g)

    def clip(c: Tensor) -> list[Tensor | None]:
        return [w_sum(c), None if bias_g is None else _weighted(c, bias_g)]

    return LayerGrads(norm_sq, clip)


def _unfold(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """im2col as ``[B, L, C_in * prod(kernel)]`` (channel-major like the weight), by strided views and one copy.

    ``F.unfold`` is avoided: its CPU kernel is single-threaded loops, 5-10x slower than this gather.
    """
    padding = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    elif any(padding):
        x = F.pad(x, [q for p in reversed(padding) for q in (p, p)])
    n, spatial = x.shape[0], x.dim() - 2
    for axis in range(spatial):
        k, st, dil = module.kernel_size[axis], module.stride[axis], module.dilation[axis]
        x = x.unfold(2 + axis, dil * (k - 1) + 1, st)
        if dil > 1:
            x = x[..., ::dil]
    # x: [B, C, *out, *kernel] -> [B, *out, C, *kernel]
    order = [0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial)]
    return x.permute(order).reshape(n, -1, math.prod(x.shape[1:2]) * math.prod(x.shape[2 + spatial :]))


def _conv_padded(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> tuple[Tensor, list[int]]:
    """The input with non-zero padding modes / string padding applied, and the numeric zero padding left."""
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        return F.pad(x, module._reversed_padding_repeated_twice, mode=mode), [0] * (x.dim() - 2)
    return x, list(module.padding)


def conv_grads(
    module: nn.Conv1d | nn.Conv2d,
    a: Tensor | Sequence[Tensor],
    b: Tensor | Sequence[Tensor],
    *,
    weight: bool = True,
    bias: bool = True,
    method: str = "auto",
    chunk_bytes: int | None = None,
) -> LayerGrads:
    """Conv1d/Conv2d ``module`` with input ``a`` ``[B, C_in, *]`` and output grad ``b`` ``[B, C_out, *]``.

    On the unfolded input (``[B, L, C_in/g * k]`` per group) the convolution is a linear map, so this is
    :func:`linear_grads` per group with ``T = L`` output positions; in ghost mode the clipped sum is the
    convolution's own weight-gradient kernel on ``c``-scaled ``b``. ``a`` and ``b`` may be lists (one entry per
    call of the module in a forward pass: the per-sample gradient is the sum over calls, so their positions are
    concatenated). Clipped sum order: ``[weight, bias]``.

    The unfolded input is formed for a chunk of samples at a time, at most ``chunk_bytes`` (default
    :data:`CONV_CHUNK_BYTES`, 4 MiB), or the size of the layer's output if that is larger (at least one sample):
    the temporary stays within the layer's own activation footprint instead of ``kernel size`` times its input
    for the whole batch. The result does not depend on the chunking (each sample is computed on its own).
    """
    a_list = [a] if isinstance(a, Tensor) else list(a)
    b_list = [b] if isinstance(b, Tensor) else list(b)
    n, c_out = b_list[0].shape[0], b_list[0].shape[1]
    flat_b = [g.reshape(n, c_out, -1) for g in b_list]
    bl = flat_b[0] if len(flat_b) == 1 else torch.cat(flat_b, 2)  # [B, C_out, L]
    norm_sq = bl.new_zeros(n)
    w_sum: Callable[[Tensor], Tensor | None] = lambda c: None  # noqa: E731
    if weight:
        groups, w_shape = module.groups, list(module.weight.shape)
        d_in, d_out, length = math.prod(w_shape[1:]), c_out // groups, bl.shape[2]
        ghost = method == "ghost" or (method == "auto" and choose_ghost(length, d_in, d_out))
        item = bl.element_size()
        per_sample_bytes = length * groups * d_in * item + (3 * length * length * item if ghost else 0)
        budget = max(CONV_CHUNK_BYTES if chunk_bytes is None else chunk_bytes, bl.numel() * item)
        rows = _chunk_rows(n, per_sample_bytes, budget)
        per_sample = None if ghost else bl.new_empty(n, groups, d_out, d_in)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            cols = [_unfold(module, x[start:stop]) for x in a_list]
            a3 = cols[0] if len(cols) == 1 else torch.cat(cols, 1)  # [rows, L, C_in * k]
            del cols
            for j in range(groups):
                aj, bj = a3[..., j * d_in : (j + 1) * d_in], bl[start:stop, j * d_out : (j + 1) * d_out]
                if ghost:
                    gram = torch.bmm(aj, aj.transpose(1, 2))
                    gram.mul_(torch.bmm(bj.transpose(1, 2), bj))
                    norm_sq[start:stop] += gram.sum((1, 2))
                elif groups == 1:
                    torch.bmm(bj, aj, out=per_sample[start:stop, 0])
                else:
                    per_sample[start:stop, j].copy_(torch.bmm(bj, aj))
            del a3
        if ghost:
            padded = [_conv_padded(module, x) for x in a_list]

            def w_sum(c: Tensor) -> Tensor:
                total = None
                for (x, pad), g in zip(padded, b_list, strict=True):
                    part = torch.ops.aten.convolution_backward(
                        g * _expand(c, g),
                        x,
                        module.weight.detach(),
                        None,
                        list(module.stride),
                        pad,
                        list(module.dilation),
                        False,
                        [0] * (x.dim() - 2),
                        groups,
                        [False, True, False],
                    )[1]
                    total = part if total is None else total + part
                return total

        else:
            assert per_sample is not None  # [B, groups, C_out/groups, d_in]
            norm_sq = norm_sq + _sq(per_sample)

            def w_sum(c: Tensor) -> Tensor:
                return _weighted(c, per_sample).view(w_shape)

    bias_g = bl.sum(2) if bias else None
    if bias_g is not None:
        norm_sq = norm_sq + _sq(bias_g)

    def clip(c: Tensor) -> list[Tensor | None]:
        return [w_sum(c), None if bias_g is None else _weighted(c, bias_g)]

    return LayerGrads(norm_sq, clip)


def embedding_grads(module: nn.Embedding, idx: Tensor, b: Tensor, *, method: str = "auto") -> LayerGrads:
    """Embedding ``module`` looked up at ``idx`` ``[B, ...]`` with output grad ``b`` ``[B, ..., d]``.

    Clipped sum order: ``[weight]``.
    """
    n, d = b.shape[0], b.shape[-1]
    ix = idx.reshape(n, -1)
    b3 = b.reshape(n, -1, d)
    if module.padding_idx is not None:
        b3 = b3.masked_fill((ix == module.padding_idx).unsqueeze(-1), 0)
    t, vocab = ix.shape[1], module.num_embeddings
    if method == "ghost" or (method == "auto" and t * t <= vocab * d):
        same = (ix.unsqueeze(2) == ix.unsqueeze(1)).to(b3.dtype)
        norm_sq = (same * torch.bmm(b3, b3.transpose(1, 2))).sum((1, 2))

        def clip(c: Tensor) -> list[Tensor | None]:
            out = b3.new_zeros(vocab, d)
            return [out.index_add_(0, ix.reshape(-1), (b3 * _expand(c, b3)).reshape(-1, d))]

        return LayerGrads(norm_sq, clip)
    offsets = ix + torch.arange(n, device=ix.device).unsqueeze(1) * vocab
    g = b3.new_zeros(n * vocab, d).index_add_(0, offsets.reshape(-1), b3.reshape(-1, d)).view(n, vocab, d)
    return materialised_grads([g])


def layer_norm_per_sample(module: nn.LayerNorm, a: Tensor, b: Tensor) -> list[Tensor | None]:
    """LayerNorm per-sample ``[weight_i, bias_i]``: ``sum(x_hat * b)`` and ``sum(b)`` over the leading dims."""
    x_hat = F.layer_norm(a, module.normalized_shape, None, None, module.eps)
    lead = tuple(range(1, a.dim() - len(module.normalized_shape)))
    w, bias = module.weight, module.bias
    if not lead:  # input [B, *normalized_shape]: nothing to sum over

        def total(t: Tensor) -> Tensor:
            return t

    else:

        def total(t: Tensor) -> Tensor:
            return t.sum(lead)

    return [
        total(x_hat * b) if w is not None and w.requires_grad else None,
        total(b) if bias is not None and bias.requires_grad else None,
    ]


def layer_norm_grads(module: nn.LayerNorm, a: Tensor, b: Tensor) -> LayerGrads:
    """LayerNorm (elementwise affine), per-sample gradients formed. Clipped sum order: ``[weight, bias]``."""
    return materialised_grads(layer_norm_per_sample(module, a, b))


def group_norm_per_sample(module: nn.GroupNorm, a: Tensor, b: Tensor) -> list[Tensor | None]:
    """GroupNorm per-sample per-channel ``[weight_i, bias_i]``: ``sum(x_hat * b)``, ``sum(b)`` over space."""
    x_hat = F.group_norm(a, module.num_groups, None, None, module.eps)
    n, ch = a.shape[0], a.shape[1]
    w, bias = module.weight, module.bias
    return [
        (x_hat * b).reshape(n, ch, -1).sum(2) if w is not None and w.requires_grad else None,
        b.reshape(n, ch, -1).sum(2) if bias is not None and bias.requires_grad else None,
    ]


def group_norm_grads(module: nn.GroupNorm, a: Tensor, b: Tensor) -> LayerGrads:
    """GroupNorm (affine), per-sample gradients formed. Clipped sum order: ``[weight, bias]``."""
    return materialised_grads(group_norm_per_sample(module, a, b))


def materialised_grads(per_sample: Sequence[Tensor | None]) -> LayerGrads:
    """From per-sample gradients ``[B, *param.shape]`` (``None`` for a frozen parameter); order is kept."""
    present = [g for g in per_sample if g is not None]
    if not present:
        raise UsageError("a layer was given no trainable parameter gradients", "This is a bug in privet.")
    norm_sq = sum((_sq(g) for g in present[1:]), _sq(present[0]))

    def clip(c: Tensor) -> list[Tensor | None]:
        return [None if g is None else _weighted(c, g) for g in per_sample]

    return LayerGrads(norm_sq, clip)


def check_supported(model: nn.Module) -> None:
    """Refuse modules whose per-sample gradients are not defined (BatchNorm mixes the samples of a batch)."""
    for name, module in model.named_modules():
        if isinstance(module, _BATCH_NORMS):
            raise UsageError(
                f"module '{name or type(module).__name__}' is a {type(module).__name__}, which mixes the samples of "
                "a batch, so per-sample gradients (and DP-SGD's guarantee) are not defined for it",
                "Use GroupNorm or LayerNorm instead; privet.dp.sgd.replace_batch_norm(model) swaps every BatchNorm "
                "for a GroupNorm.",
            )


def _groups_for(channels: int, preferred: int = 32) -> int:
    """The largest divisor of ``channels`` that is at most ``preferred`` (32 groups, as in Wu & He 2018)."""
    best = 1
    for g in range(1, min(preferred, channels) + 1):
        if channels % g == 0:
            best = g
    return best


def replace_batch_norm(model: nn.Module, *, max_groups: int = 32) -> nn.Module:
    """Replace every BatchNorm*d / SyncBatchNorm in ``model`` (in place) by a GroupNorm; returns ``model``.

    The group count is the largest divisor of the channel count not above ``max_groups``; ``eps`` and ``affine``
    are kept, and the affine parameters start as identity (the BatchNorm's statistics cannot be carried over).
    A BatchNorm at the root is returned replaced (the caller's reference cannot be changed in place).
    """
    if isinstance(model, _BATCH_NORMS):
        return _group_norm_like(model, max_groups)
    for name, child in list(model.named_children()):
        if isinstance(child, _BATCH_NORMS):
            setattr(model, name, _group_norm_like(child, max_groups))
        else:
            replace_batch_norm(child, max_groups=max_groups)
    return model


def _group_norm_like(bn: nn.modules.batchnorm._BatchNorm, max_groups: int) -> nn.GroupNorm:
    channels = bn.num_features
    gn = nn.GroupNorm(_groups_for(channels, max_groups), channels, eps=bn.eps, affine=bn.affine)
    if bn.affine and bn.weight is not None:
        gn = gn.to(device=bn.weight.device, dtype=bn.weight.dtype)
    return gn
