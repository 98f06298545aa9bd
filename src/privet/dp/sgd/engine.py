"""Per-sample gradient clipping for PyTorch models in one backward pass ("book-keeping", Bu et al. 2022).

:class:`PerSampleClipper` takes a model and, in place, makes every trainable layer record what it needs, so that
after ``loss.backward()`` each trainable parameter's ``.grad`` holds ``sum_i c_i g_i``: the sum over the batch of
per-sample gradients ``g_i`` clipped to total L2 norm ``max_grad_norm`` across *all* parameters, with
``c_i = min(1, C / (||g_i|| + 1e-6))``. No noise is added here; :class:`~privet.dp.sgd.optimizer.DPOptimizer`
does that.

How it works
    Each module that owns parameters becomes a *unit*. Supported layer types (exact types ``Linear``,
    ``Conv1d``, ``Conv2d``, ``Embedding``, ``LayerNorm``, ``GroupNorm``) get their ``forward`` replaced by the same
    computation with the parameters **detached**: autograd then computes only the input gradient of these
    layers, never their weight gradient. The forward saves the layer input (autograd would have kept it for the
    weight gradient anyway) and a tensor hook on the output captures the output gradient ``b`` during backward.
    At the end of the backward pass (an autograd engine callback) the per-sample squared norms of every unit are
    computed from ``(a, b)`` by :mod:`privet.dp.sgd.layers` (ghost norms or cheap materialisation, chosen per
    layer by cost), summed over units, and the clipped sums are formed with the layers' ordinary weight-gradient
    ops on ``c``-scaled ``b``: the extra cost over a non-private step is the norm computation only. A unit
    called once per forward pass computes its norms as soon as its ``b`` arrives (LayerNorm/GroupNorm and
    materialising layers then release ``a`` and ``b`` at once: their per-sample gradients are what remains);
    the end-of-backward step releases each unit's tensors as soon as its clipped sum is formed.
    ``nn.MultiheadAttention`` (and privet's :class:`~privet.dp.sgd.attention.MultiheadAttention`) is handled
    natively, without replacing the module: while the clipper is attached its forward is
    :func:`~privet.dp.sgd.attention.attention_forward` (same arguments and results: packed in-projection,
    ``scaled_dot_product_attention``, ``out_proj``), the packed in-projection ``in_proj_weight``/``in_proj_bias``
    is one unit handled like a Linear layer (ghost or materialised by cost; self-attention is one call over all
    ``3E`` rows, cross-attention records which rows each projection used) and ``out_proj`` is an ordinary Linear
    unit; parameters, state dict and optimizer references are untouched, so nothing has to be called first
    (:func:`~privet.dp.sgd.attention.replace_attention` exists for code that wants the module itself). Only
    ``kdim``/``vdim`` other than ``embed_dim``, ``add_bias_kv`` and ``add_zero_attn`` fall back to ``vmap``.
    A module of any other type that owns parameters (a custom module, ...) is a generic
    unit covering its whole subtree: its forward runs under ``torch.func.vmap`` with its parameters expanded per
    sample, so the same single backward pass yields its per-sample gradients ``[B, *shape]`` (materialised).
    Dropout inside it stays valid (``randomness="different"``).

Loss convention
    ``loss_reduction="mean"`` (default): the loss is the *mean* of per-sample losses over the physical batch, as
    ``nn.CrossEntropyLoss()`` gives; the recorded gradients are multiplied by the realised batch size ``B`` before
    clipping (so ``g_i`` is the gradient of sample ``i``'s own loss). ``loss_reduction="sum"``: the loss is the
    sum of per-sample losses. Either way ``.grad`` ends up holding the *sum* of clipped per-sample gradients;
    dividing by the expected batch size is the optimizer's job.

Rules, checked or documented
    - Dimension 0 of every unit's input and output is the batch (``MultiheadAttention`` with
      ``batch_first=False``: dimension 1 of its arguments, as PyTorch defines it; the engine moves it first).
      All units must see the same batch size in one
      backward pass; a mismatch (e.g. a ``view(-1, d)`` that folds a sequence into the batch) is refused, as the
      clipping unit would silently become a token instead of an example.
    - BatchNorm is refused (see :func:`~privet.dp.sgd.layers.replace_batch_norm`).
    - Frozen parameters (``requires_grad=False``) are ignored and their ``.grad`` is never touched.
    - A module called several times in one forward pass accumulates: its per-sample gradient is the sum over the
      calls (exact, cross terms included).
    - A parameter owned by several units (weight tying across modules) is refused at wrap time; a parameter
      used outside its module's forward (``F.linear(x, self.emb.weight)``) would receive an unclipped gradient,
      so a hook on every trainable parameter refuses it during backward.
    - One backward per forward. ``torch.no_grad()`` forwards (evaluation) run the original layers untouched.
    - The layer input must not be modified in place after the layer used it (checked by version counter).

Memory: besides the activations autograd keeps anyway (the layer inputs, now saved by the units instead of by
autograd), the output gradients of the ghost-mode units are held until the end of the backward pass (the
book-keeping method needs ``a`` and ``b`` of every such layer once the clipping factors are known), plus the
Gram matrices or per-sample gradients of one unit at a time; convolution unfolds and the scaled rows of the
clipped-sum matmuls are formed a chunk of samples at a time (:data:`~privet.dp.sgd.layers.CONV_CHUNK_BYTES`).
Works on any device; all arithmetic stays on the parameters'
device.
"""

from __future__ import annotations

import abc
import types
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from privet.dp.sgd import attention, layers
from privet.errors import UsageError

__all__ = ["PerSampleClipper"]

LossReduction = Literal["mean", "sum"]
_EPS = 1e-6


class _Call:
    """One forward call of a unit: the saved input, its version, and the output gradient once backward ran."""

    __slots__ = ("a", "b", "grads", "lg", "seg", "version")

    def __init__(self, a: Any, seg: tuple[int, int] | None = None) -> None:
        self.a = a
        self.b: Tensor | None = None
        self.grads: dict[str, Tensor] = {}
        self.lg: layers.LayerGrads | None = None  # formed during backward (a unit called once per forward)
        self.seg = seg  # rows of the unit's weight this call used (attention in-projection), None: all
        self.version = a._version if isinstance(a, Tensor) else 0


class _Unit(abc.ABC):
    """A module whose trainable parameters are clipped together with the rest of the model."""

    slots: tuple[str, ...] = ("weight", "bias")
    kind = ""

    def __init__(self, engine: PerSampleClipper, name: str, module: nn.Module) -> None:
        self.engine = engine
        self.name = name or type(module).__name__
        self.module = module
        self.calls: list[_Call] = []
        self.bypass = False
        self.original = module.forward
        module.forward = types.MethodType(_forward_override(self), module)

    def params(self) -> list[nn.Parameter | None]:
        return [getattr(self.module, s, None) for s in self.slots]

    def trainable(self, slot: str) -> bool:
        p = getattr(self.module, slot, None)
        return isinstance(p, Tensor) and p.requires_grad

    def any_trainable(self) -> bool:
        return any(p is not None and p.requires_grad for p in self.params())

    def active(self) -> bool:
        """Whether the engine's forward must run (else the module's own, e.g. all parameters frozen)."""
        return self.any_trainable()

    def restore(self) -> None:
        if "forward" in self.module.__dict__:
            del self.module.forward

    # -- forward ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's forward, recording what the unit needs for its per-sample norms."""

    def tap(self, out: Tensor, a: Tensor, seg: tuple[int, int] | None = None) -> Tensor:
        call = _Call(a, seg)
        if not out.requires_grad:  # e.g. the first layer: its input needs no gradient and its weights are detached
            out = _Attach.apply(out, self.engine._anchor(out))
        out.register_hook(self.engine._grad_hook(self, call))
        self.calls.append(call)
        return out

    # -- after backward --------------------------------------------------------------------------------------

    def received(self, call: _Call) -> None:
        """Called as soon as ``call.b`` arrives during backward.

        A unit called once in the forward pass forms its norms (and, when it materialises, its per-sample
        gradients) right away: the temporaries then come and go while autograd still frees activations, not at
        the end of the backward pass where everything saved is live, and a materialising unit releases its
        saved input and output gradient here (its recipe only keeps what the clipped sum needs).
        """
        if len(self.calls) != 1 or call.b is None or call.b.shape[0] == 0:
            return
        self.check_version(call)
        with torch.no_grad():
            call.lg = self.grads([call])
        call.a = call.b = None

    def layer_grads(self, calls: list[_Call]) -> layers.LayerGrads:
        if len(calls) == 1 and calls[0].lg is not None:
            return calls[0].lg
        return self.grads(calls)

    def check_version(self, call: _Call) -> None:
        if isinstance(call.a, Tensor) and call.a._version != call.version:
            raise UsageError(
                f"the input of module '{self.name}' was modified in place after the module used it",
                "Avoid in-place operations on a layer's input (e.g. use x = x + y instead of x += y).",
            )

    def done(self) -> list[_Call]:
        calls = [c for c in self.calls if c.b is not None or c.grads or c.lg is not None]
        for c in calls:
            self.check_version(c)
        return calls

    @abc.abstractmethod
    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        """Per-sample norms and the clipped sum of this unit's recorded calls."""


class _Attach(torch.autograd.Function):
    """``x`` (copied) attached to the graph through ``anchor``, so that a hook on it sees its gradient.

    Unlike ``x + anchor`` its backward is free: the anchor gets no gradient (``None``), where the sum would
    reduce the whole output gradient to a scalar nobody reads (measurable on small models).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, anchor: Tensor) -> Tensor:
        return x.clone()  # a fresh tensor: a view returned by a Function could not be modified in place

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None]:
        return None, None


def _forward_override(unit: _Unit) -> Callable[..., Any]:
    def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if unit.bypass or not torch.is_grad_enabled() or not unit.active():
            return unit.original(*args, **kwargs)
        return unit.forward(*args, **kwargs)

    return forward


def _d(p: Tensor | None) -> Tensor | None:
    return None if p is None else p.detach()


def _cat_seq(tensors: list[Tensor], *, feature: bool = True) -> Tensor:
    """Concatenate per-call tensors along a flattened sequence dimension (exact for sums over positions)."""
    n = tensors[0].shape[0]
    flat = [t.reshape(n, -1, t.shape[-1]) if feature else t.reshape(n, -1) for t in tensors]
    return flat[0] if len(flat) == 1 else torch.cat(flat, 1)


class _LinearUnit(_Unit):
    kind = "linear"

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return self.tap(F.linear(x, m.weight.detach(), _d(m.bias)), x)

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        a = _cat_seq([c.a for c in calls])
        b = _cat_seq([c.b for c in calls])
        return layers.linear_grads(a, b, weight=self.trainable("weight"), bias=self.trainable("bias"))


class _ConvUnit(_Unit):
    kind = "conv"

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return self.tap(m._conv_forward(x, m.weight.detach(), _d(m.bias)), x)

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        return layers.conv_grads(
            self.module,
            [c.a for c in calls],
            [c.b for c in calls],
            weight=self.trainable("weight"),
            bias=self.trainable("bias"),
        )


class _EmbeddingUnit(_Unit):
    slots = ("weight",)
    kind = "embedding"

    def __init__(self, engine: PerSampleClipper, name: str, module: nn.Embedding) -> None:
        if module.scale_grad_by_freq or module.sparse:
            raise UsageError(
                f"Embedding '{name}' uses {'scale_grad_by_freq' if module.scale_grad_by_freq else 'sparse'}=True, "
                "which DP-SGD does not support (it makes a sample's gradient depend on the batch, or is sparse)",
                "Create the Embedding with scale_grad_by_freq=False and sparse=False.",
            )
        super().__init__(engine, name, module)

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        out = F.embedding(x, m.weight.detach(), m.padding_idx, m.max_norm, m.norm_type, False, False)
        return self.tap(out, x)

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        idx = _cat_seq([c.a for c in calls], feature=False)
        b = _cat_seq([c.b for c in calls])
        return layers.embedding_grads(self.module, idx, b)


class _EagerNormUnit(_Unit):
    """LayerNorm / GroupNorm: per-sample gradients (``[B, C]``) are tiny, so they are formed as soon as the output
    gradient arrives, and the saved input and the output gradient are released then instead of at the end of
    the backward pass."""

    @abc.abstractmethod
    def per_sample(self, a: Tensor, b: Tensor) -> list[Tensor | None]:
        """Per-sample gradients of the affine parameters from the layer input and its output gradient."""

    def received(self, call: _Call) -> None:
        assert call.b is not None
        self.check_version(call)
        with torch.no_grad():
            parts = self.per_sample(call.a, call.b)
        call.grads = {slot: g for slot, g in zip(self.slots, parts, strict=True) if g is not None}
        call.a = call.b = None

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        total: list[Tensor | None] = []
        for slot in self.slots:
            parts = [c.grads[slot] for c in calls if slot in c.grads]
            total.append(sum(parts[1:], parts[0]) if parts else None)
        return layers.materialised_grads(total)


class _LayerNormUnit(_EagerNormUnit):
    kind = "layernorm"

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return self.tap(F.layer_norm(x, m.normalized_shape, _d(m.weight), _d(m.bias), m.eps), x)

    def per_sample(self, a: Tensor, b: Tensor) -> list[Tensor | None]:
        return layers.layer_norm_per_sample(self.module, a, b)


class _GroupNormUnit(_EagerNormUnit):
    kind = "groupnorm"

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return self.tap(F.group_norm(x, m.num_groups, _d(m.weight), _d(m.bias), m.eps), x)

    def per_sample(self, a: Tensor, b: Tensor) -> list[Tensor | None]:
        return layers.group_norm_per_sample(self.module, a, b)


class _GenericUnit(_Unit):
    """Any other module owning parameters: per-sample gradients via ``vmap`` with per-sample expanded parameters."""

    kind = "generic"

    def __init__(self, engine: PerSampleClipper, name: str, module: nn.Module) -> None:
        super().__init__(engine, name, module)
        self.names = [n for n, _ in module.named_parameters()]
        self.slots = tuple(self.names)

    def params(self) -> list[nn.Parameter | None]:
        return [p for _, p in self.module.named_parameters()]

    def trainable(self, slot: str) -> bool:
        return self.module.get_parameter(slot).requires_grad

    def batch_dims(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[int | None], int]:
        """Batch dimension of each input leaf (None: shared by the batch) and of the outputs."""
        leaves, _ = tree_flatten((args, kwargs))
        first = next((x for x in leaves if isinstance(x, Tensor) and x.dim() > 0), None)
        if first is None:
            raise UsageError(f"module '{self.name}' got no batched tensor input", "Pass the batch as a tensor.")
        n = first.shape[0]
        return [0 if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == n else None for x in leaves], 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = tree_flatten((args, kwargs))
        dims, out_dim = self.batch_dims(args, kwargs)
        batched = [(i, leaves[i], d) for i, d in enumerate(dims) if d is not None]
        n = batched[0][1].shape[batched[0][2]]
        frozen: dict[str, Tensor] = {}
        expanded: dict[str, Tensor] = {}
        for name, p in self.module.named_parameters():
            if p.requires_grad:
                expanded[name] = p.detach().expand(n, *p.shape).requires_grad_()
            else:
                frozen[name] = p
        for buf_name, buf in self.module.named_buffers():
            frozen[buf_name] = buf
        out_spec: list[Any] = []

        def single(per_sample: dict[str, Tensor], *values: Tensor) -> tuple[Tensor, ...]:
            full = list(leaves)
            for (i, _, d), v in zip(batched, values, strict=True):
                full[i] = v.unsqueeze(d)
            a, kw = tree_unflatten(full, spec)
            self.bypass = True
            try:
                out = torch.func.functional_call(self.module, {**frozen, **per_sample}, a, kw)
            finally:
                self.bypass = False
            out_leaves, o_spec = tree_flatten(out)
            out_spec[:] = [o_spec, [isinstance(x, Tensor) for x in out_leaves], out_leaves]
            return tuple(
                x.squeeze(od)
                for x, od in zip(out_leaves, self.out_dims(out_leaves, out_dim), strict=True)
                if isinstance(x, Tensor)
            )

        values = [v for _, v, _ in batched]
        in_dims = (0, *[d for _, _, d in batched])
        mapped = torch.func.vmap(single, in_dims=in_dims, out_dims=0, randomness="different")(expanded, *values)
        call = _Call(values[0])
        for name, e in expanded.items():
            e.register_hook(self.engine._param_grad_hook(call, name))
        self.calls.append(call)
        o_spec, is_tensor, raw = out_spec
        outs = iter(mapped)
        sample_leaves = [raw[i] for i in range(len(raw))]
        final = []
        for leaf, flag, od in zip(sample_leaves, is_tensor, self.out_dims(sample_leaves, out_dim), strict=True):
            final.append(next(outs).movedim(0, od) if flag else leaf)
        return tree_unflatten(final, o_spec)

    def out_dims(self, out_leaves: list[Any], out_dim: int) -> list[int]:
        return [out_dim] * len(out_leaves)

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        total: list[Tensor | None] = []
        for name in self.names:
            parts = [c.grads[name] for c in calls if name in c.grads]
            total.append(None if not parts else sum(parts[1:], parts[0]))
        return layers.materialised_grads(total)


class _AttentionVmapUnit(_GenericUnit):
    """``nn.MultiheadAttention`` that :mod:`.attention` cannot compute (kdim/vdim, add_bias_kv, add_zero_attn):
    the generic ``vmap`` path; query/key/value batched at dim 0 (batch_first) or 1; masks as PyTorch defines."""

    kind = "attention_vmap"

    def batch_dims(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[int | None], int]:
        bd = 0 if self.module.batch_first else 1
        names = ["query", "key", "value", "key_padding_mask", "need_weights", "attn_mask"]
        dims_by_name = {"query": bd, "key": bd, "value": bd, "key_padding_mask": 0}
        named = dict(zip(names, args, strict=False))
        mask = kwargs.get("attn_mask", named.get("attn_mask"))
        if isinstance(mask, Tensor) and mask.dim() == 3:
            raise UsageError(
                f"MultiheadAttention '{self.name}' got a per-sample (3-D) attn_mask, which DP-SGD cannot split",
                "Use a 2-D attn_mask shared by the batch, or key_padding_mask for per-sample padding.",
            )
        dims: list[int | None] = []
        for i, x in enumerate(args):
            dims.append(dims_by_name.get(names[i]) if i < len(names) and isinstance(x, Tensor) else None)
        for key in kwargs:  # tree_flatten orders dict leaves by insertion order
            x = kwargs[key]
            dims.append(dims_by_name.get(key) if isinstance(x, Tensor) else None)
        return dims, bd

    def out_dims(self, out_leaves: list[Any], out_dim: int) -> list[int]:
        return [out_dim, 0][: len(out_leaves)] + [0] * max(0, len(out_leaves) - 2)


class _AttentionUnit(_Unit):
    """``nn.MultiheadAttention`` (or privet's): the packed in-projection ``in_proj_weight``/``in_proj_bias`` is
    this unit, handled as a Linear layer (ghost or materialised by cost); ``out_proj`` is its own Linear unit; the
    attention in between runs through ordinary autograd (:func:`~privet.dp.sgd.attention.attention_forward`).

    Self-attention is one projection call over all ``3 E`` rows; cross-attention projects the query with rows
    ``[0, E)`` and key/value with ``[E, 3E)`` (or each separately): every call records which rows it used.
    """

    slots = ("in_proj_weight", "in_proj_bias")
    kind = "attention"

    def active(self) -> bool:
        # The module's own forward would apply out_proj with F.linear, bypassing out_proj's unit: always take
        # the engine's path while any parameter of the attention (out_proj included) trains.
        return any(p.requires_grad for p in self.module.parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return attention.attention_forward(self.module, *args, projection=self.project, **kwargs)

    def project(self, module: nn.Module, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
        if not self.any_trainable():
            return attention.project(module, query, key, value)
        w, b, e = module.in_proj_weight.detach(), _d(module.in_proj_bias), module.embed_dim

        def linear(x: Tensor, lo: int, hi: int) -> Tensor:
            return self.tap(F.linear(x, w[lo:hi], None if b is None else b[lo:hi]), x, (lo, hi))

        if query is key and key is value:
            return tuple(linear(query, 0, 3 * e).chunk(3, -1))
        if key is value:
            return (linear(query, 0, e), *linear(key, e, 3 * e).chunk(2, -1))
        return linear(query, 0, e), linear(key, e, 2 * e), linear(value, 2 * e, 3 * e)

    def grads(self, calls: list[_Call]) -> layers.LayerGrads:
        weight, bias = self.trainable("in_proj_weight"), self.trainable("in_proj_bias")
        e = self.module.embed_dim
        if all(c.seg == (0, 3 * e) for c in calls):  # self-attention only: one Linear of 3E outputs
            return layers.linear_grads(
                _cat_seq([c.a for c in calls]), _cat_seq([c.b for c in calls]), weight=weight, bias=bias
            )
        # Mixed calls: the q, k and v row blocks are disjoint parameters; norms add, sums concatenate.
        blocks: list[layers.LayerGrads | None] = []
        for lo in (0, e, 2 * e):
            parts = [(c.a, c.b[..., lo - c.seg[0] : lo - c.seg[0] + e]) for c in calls if c.seg[0] <= lo < c.seg[1]]
            blocks.append(
                layers.linear_grads(
                    _cat_seq([a for a, _ in parts]), _cat_seq([g for _, g in parts]), weight=weight, bias=bias
                )
                if parts
                else None
            )
        present = [lg for lg in blocks if lg is not None]
        norm_sq = sum((lg.norm_sq for lg in present[1:]), present[0].norm_sq)
        like = self.module.in_proj_weight

        def clip(c: Tensor) -> list[Tensor | None]:
            sums = [lg.clipped_sum(c) if lg is not None else [None, None] for lg in blocks]
            w_parts = [s[0] if s[0] is not None else like.new_zeros(e, e) for s in sums]
            b_parts = [s[1] if s[1] is not None else like.new_zeros(e) for s in sums]
            return [torch.cat(w_parts) if weight else None, torch.cat(b_parts) if bias else None]

        return layers.LayerGrads(norm_sq, clip)


_HANDLED: dict[type, type[_Unit]] = {
    nn.Linear: _LinearUnit,
    nn.modules.linear.NonDynamicallyQuantizableLinear: _LinearUnit,
    nn.Conv1d: _ConvUnit,
    nn.Conv2d: _ConvUnit,
    nn.Embedding: _EmbeddingUnit,
    nn.LayerNorm: _LayerNormUnit,
    nn.GroupNorm: _GroupNormUnit,
    nn.MultiheadAttention: _AttentionVmapUnit,
}
_ATTENTION = (nn.MultiheadAttention, attention.MultiheadAttention)


class PerSampleClipper:
    """Make ``module`` (in place) leave clipped per-sample gradient sums in ``.grad`` after each backward pass.

    ``max_grad_norm`` is the clipping bound ``C`` on each sample's gradient over all trainable parameters;
    ``loss_reduction`` says whether the loss is the mean (default) or the sum of per-sample losses.
    After ``loss.backward()``: ``p.grad += sum_i min(1, C / (||g_i|| + 1e-6)) g_i`` for each trainable
    parameter ``p``, and :attr:`last_norms` holds the per-sample norms ``||g_i||`` of that pass.
    Call :meth:`remove` (or use the clipper as a context manager) to restore the module.
    """

    def __init__(
        self,
        module: nn.Module,
        max_grad_norm: float,
        *,
        loss_reduction: LossReduction = "mean",
    ) -> None:
        if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
            raise UsageError(
                f"max_grad_norm must be a number > 0, got {max_grad_norm!r}",
                "max_grad_norm is the per-sample clipping bound C, e.g. 1.0.",
            )
        if not max_grad_norm < float("inf"):
            raise UsageError("max_grad_norm must be finite", "Pass a finite clipping bound, e.g. 1.0.")
        if loss_reduction not in ("mean", "sum"):
            raise UsageError(
                f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}",
                "Use 'mean' for a loss averaged over the batch (the PyTorch default), 'sum' for a summed loss.",
            )
        layers.check_supported(module)
        self.module = module
        self.max_grad_norm = float(max_grad_norm)
        self.loss_reduction: LossReduction = loss_reduction
        self.last_norms: Tensor | None = None
        self._units: list[_Unit] = []
        self._anchors: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._queued = False
        self._handles: list[Any] = []
        self._layout: dict[str, str] = {}
        owners: dict[int, str] = {}
        try:
            self._build(module, "")
            for unit in self._units:
                for p in unit.params():
                    if p is None:
                        continue
                    if id(p) in owners:
                        raise UsageError(
                            f"a parameter is shared by modules '{owners[id(p)]}' and '{unit.name}'",
                            "Untie the weights (give each module its own parameter); tied weights across modules "
                            "are not supported by privet's DP-SGD engine.",
                        )
                    owners[id(p)] = unit.name
            self._layout = {u.name: u.kind for u in self._units}
            for name, p in module.named_parameters():
                if p.requires_grad:
                    self._handles.append(p.register_hook(_leak_hook(name)))
        except BaseException:
            self.remove()
            raise

    # -- setup -----------------------------------------------------------------------------------------------

    def _build(self, module: nn.Module, prefix: str) -> None:
        if type(module) in _ATTENTION and attention.native_supported(module) is None:
            if module.in_proj_weight is not None:
                self._units.append(_AttentionUnit(self, prefix, module))
            for name, child in module.named_children():  # out_proj: an ordinary Linear unit
                self._build(child, f"{prefix}.{name}" if prefix else name)
            return
        kind = _HANDLED.get(type(module))
        own = any(True for _ in module.parameters(recurse=False))
        if kind is not None and any(True for _ in module.parameters()):
            self._units.append(kind(self, prefix, module))
        elif own:
            self._units.append(_GenericUnit(self, prefix, module))
        else:
            for name, child in module.named_children():
                self._build(child, f"{prefix}.{name}" if prefix else name)

    def remove(self) -> None:
        """Restore the module's original forwards and drop the hooks."""
        for unit in self._units:
            unit.restore()
        for handle in self._handles:
            handle.remove()
        self._units, self._handles = [], []

    def __enter__(self) -> PerSampleClipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def units(self) -> dict[str, str]:
        """Unit name -> how it is handled: linear, conv, embedding, layernorm, groupnorm, generic (vmap), attention
        (a MultiheadAttention's in-projection, handled as a Linear; its ``out_proj`` is a separate linear unit),
        attention_vmap (a MultiheadAttention the attention path cannot compute, through vmap)."""
        return dict(self._layout)

    # -- backward machinery ----------------------------------------------------------------------------------

    def _anchor(self, like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        anchor = self._anchors.get(key)
        if anchor is None:
            anchor = torch.zeros((), device=like.device, dtype=like.dtype, requires_grad=True)
            self._anchors[key] = anchor
        return anchor

    def _queue(self) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._finish)

    def _grad_hook(self, unit: _Unit, call: _Call) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            if call.b is not None or call.grads or call.lg is not None:
                raise UsageError(
                    "a second backward pass went through the same forward pass",
                    "Run one forward pass per backward pass (no retain_graph) with the DP-SGD engine.",
                )
            call.b = grad
            self._queue()
            unit.received(call)

        return hook

    def _param_grad_hook(self, call: _Call, name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            call.grads[name] = grad
            self._queue()

        return hook

    def _finish(self) -> None:
        try:
            with torch.no_grad():
                self._clip_and_accumulate()
        finally:
            self._queued = False
            for unit in self._units:
                unit.calls = []
            for anchor in self._anchors.values():
                anchor.grad = None

    def _clip_and_accumulate(self) -> None:
        pending = [(unit, calls) for unit in self._units if (calls := unit.done())]
        if any(_batch_size(c) == 0 for _, calls in pending for c in calls):
            self.last_norms = None  # an empty batch: nothing to add
            return
        work: list[tuple[_Unit, layers.LayerGrads]] = []
        sizes: dict[str, int] = {}
        for unit, calls in pending:
            lg = unit.layer_grads(calls)
            work.append((unit, lg))
            sizes[unit.name] = lg.norm_sq.shape[0]
        if not work:
            return
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in list(sizes.items())[:6])
            raise UsageError(
                f"modules saw different batch sizes in one backward pass ({detail})",
                "Keep the batch in dimension 0 of every layer's input; do not fold other dimensions into it.",
            )
        n = next(iter(sizes.values()))
        norm_sq = work[0][1].norm_sq
        if norm_sq.dtype in (torch.float16, torch.bfloat16):
            norm_sq = norm_sq.float()
        for _, lg in work[1:]:
            norm_sq = norm_sq + lg.norm_sq.to(norm_sq.device, norm_sq.dtype)
        scale = float(n) if self.loss_reduction == "mean" else 1.0
        norms = norm_sq.clamp_min(0).sqrt() * scale
        factor = (self.max_grad_norm / (norms + _EPS)).clamp(max=1.0) * scale
        self.last_norms = norms
        del pending, calls
        work.reverse()
        while work:  # release each unit's saved tensors as soon as its clipped sum is formed
            unit, lg = work.pop()
            unit.calls = []
            grads = lg.clipped_sum(factor.to(lg.norm_sq.device))
            del lg
            for p, g in zip(unit.params(), grads, strict=True):
                if g is None or p is None or not p.requires_grad:
                    continue
                g = g.to(p.dtype).view(p.shape)
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)


def _batch_size(call: _Call) -> int:
    if call.b is not None:
        return call.b.shape[0]
    if call.lg is not None:
        return call.lg.norm_sq.shape[0]
    return next(iter(call.grads.values())).shape[0]


def _leak_hook(name: str) -> Callable[[Tensor], None]:
    def hook(grad: Tensor) -> None:
        raise UsageError(
            f"parameter '{name}' received an ordinary (unclipped) gradient: it is used outside its own module's "
            "forward (e.g. F.linear(x, other.weight)) or by a module privet does not wrap",
            "Use each parameter only through its module's forward, or move the computation into a custom module "
            "that owns the parameter.",
        )

    return hook
