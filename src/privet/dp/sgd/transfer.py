"""Transfer learning under DP-SGD: train a small part of a pre-trained model, leave the rest frozen.

Under DP-SGD the noise added per step has the same scale in every trained coordinate, so training fewer
parameters, on features learned from public data, usually gives a better model at the same epsilon (Tramer &
Boneh 2021; Yu et al. 2022, "Differentially private fine-tuning of language models"). Two ways are offered:

- :func:`freeze`: train only some named submodules (a classifier head, the last layers);
- :func:`add_adapters`: LoRA (Hu et al. 2021): a frozen ``nn.Linear`` ``W`` becomes ``W x + (alpha / r) U D x``
  with trainable ``D`` (``r x in``) and ``U`` (``out x r``), ``U`` starting at zero so the model is unchanged at
  first; :func:`merge_adapters` folds ``U D`` back into ``W`` for serving.

Both leave the model made of ordinary layers: :class:`~privet.dp.sgd.engine.PerSampleClipper` clips ``D`` and
``U`` with its ``nn.Linear`` path (book-keeping, any number of leading dimensions) and ignores frozen
parameters, so :func:`~privet.dp.sgd.private.make_private` needs nothing special. Freeze and add adapters
*before* ``make_private``: the clipper wraps the modules it finds then, and the optimizer must hold exactly the
trainable parameters.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from privet.errors import UsageError

__all__ = ["LowRankAdapter", "add_adapters", "freeze", "merge_adapters"]


def _names(value: str | Iterable[str], what: str) -> list[str]:
    # A bare string is one name: iterating it would silently give one-letter names.
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise UsageError(f"{what} must be module names (strings)", f"Pass e.g. {what}=['head'].")
    return names


def _unknown_module(model: nn.Module, name: str) -> UsageError:
    if name in dict(model.named_parameters()):
        return UsageError(f"{name!r} is a parameter, not a module", f"Name its module, {name.rpartition('.')[0]!r}.")
    known = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"Close names: {', '.join(close)}." if close else "See model.named_modules() for the names."
    return UsageError(f"the model has no module named {name!r}", hint)


def freeze(model: nn.Module, trainable: str | Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter outside the named submodules; return the trainable names.

    ``trainable`` holds qualified module names as ``model.named_modules()`` gives them (``"head"``,
    ``"encoder.layer.5"``). Parameters inside those modules keep their flag: ``freeze`` never unfreezes, so
    the frozen base layer of a :class:`LowRankAdapter` stays frozen when the adapter is named. Returns the
    qualified names of the parameters left trainable; refuses an unknown module name, and a result with nothing
    left to train.
    """
    names = _names(trainable, "trainable")
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise _unknown_module(model, name)
    prefixes = tuple(f"{n}." for n in names if n)
    keep = "" in names  # the root module: everything stays as it is
    kept: list[str] = []
    for pname, param in model.named_parameters():
        if not (keep or pname.startswith(prefixes)):
            param.requires_grad_(False)
        elif param.requires_grad:
            kept.append(pname)
    if not kept:
        raise UsageError(
            f"no parameter of {', '.join(repr(n) for n in names) or 'the named modules'} is trainable",
            "Name modules that have trainable parameters (freeze never unfreezes; set requires_grad=True first).",
        )
    return kept


class LowRankAdapter(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + alpha / rank * up(down(dropout(x)))``.

    ``down`` is ``nn.Linear(in, rank, bias=False)`` initialised Kaiming-uniform as in LoRA's reference code and
    ``up`` is ``nn.Linear(rank, out, bias=False)`` initialised to zero, so at first the adapter computes exactly
    ``base(x)``. ``dropout`` applies to the adapter's input only (LoRA's ``lora_dropout``). The base layer's
    parameters are frozen here; the adapter's are created on the base's device and dtype.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise UsageError(f"a LowRankAdapter wraps an nn.Linear, not a {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise UsageError(f"the adapter rank must be a positive integer, got {rank!r}", "LoRA uses e.g. rank=8.")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < math.inf:
            raise UsageError(f"alpha must be a finite number > 0, got {alpha!r}", "LoRA uses e.g. alpha=2*rank.")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {dropout!r}", "Use 0.0 for no adapter dropout.")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.down = nn.Linear(base.in_features, rank, bias=False, **like)
        self.up = nn.Linear(rank, base.out_features, bias=False, **like)
        # As LoRA's reference code: explicit, rather than relying on nn.Linear's default (the same today).
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)  # so that the adapted model starts as the pre-trained one
        self.dropout = nn.Dropout(dropout)
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(self.dropout(x)))

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (``W + scale * U D``, same bias), frozen like the base."""
        base = self.base
        layer = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(base.weight + self.scale * (self.up.weight @ self.down.weight))
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        layer.requires_grad_(False)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _matches(name: str, targets: list[str]) -> bool:
    # Dotted-suffix match: "query" matches "encoder.layer.0.attention.self.query", not "encoder.subquery".
    return any(name == t or name.endswith(f".{t}") for t in targets)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


def add_adapters(
    model: nn.Module,
    targets: str | Iterable[str] = ("query", "value"),
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Replace (in place) every ``nn.Linear`` whose qualified name ends with a target by a :class:`LowRankAdapter`.

    ``targets`` are dotted suffixes of module names (``"query"``, ``"attention.self.value"``). The replaced
    layers' own parameters are frozen; other parameters are left as they are (call :func:`freeze` with the
    returned names and, say, the classifier head to freeze the rest). Returns the adapters' qualified names.
    Refuses when nothing matched, and a model already made private (its clipper would not see the adapters).
    """
    suffixes = _names(targets, "targets")
    if getattr(model, "_privet_clipper", None) is not None:
        raise UsageError(
            "this model was already made private, so its clipper would not see new adapters",
            "Add adapters before make_private.",
        )
    found = [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear) and _matches(name, suffixes)
    ]
    if not found:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        tails = sorted({n.rsplit(".", 1)[-1] for n in linear})
        hint = f"Its Linear layers end with: {', '.join(tails[:12])}." if tails else "The model has no nn.Linear layer."
        raise UsageError(f"no nn.Linear layer of the model matches {', '.join(map(repr, suffixes))}", hint)
    places = [(name, *_parent(model, name), module) for name, module in found]
    for name, parent, _, _ in places:
        # nn.MultiheadAttention reads out_proj.weight directly (F.multi_head_attention_forward): an adapter
        # there would be silently skipped. Checked for all before any replacement, so a refusal changes nothing.
        if isinstance(parent, nn.MultiheadAttention):
            raise UsageError(
                f"{name!r} belongs to an nn.MultiheadAttention, which bypasses the module's forward",
                "Target separate query/key/value/output Linear layers (as in Hugging Face models).",
            )
    for _, parent, child, module in places:
        setattr(parent, child, LowRankAdapter(module, rank=rank, alpha=alpha, dropout=dropout))
    return [name for name, _ in found]


def merge_adapters(model: nn.Module) -> list[str]:
    """Replace (in place) every :class:`LowRankAdapter` by the equivalent plain ``nn.Linear``; return their names.

    For serving: the merged model computes the same function (to floating-point rounding) with no extra
    matmuls. An adapter at the root cannot be replaced in place: call its :meth:`~LowRankAdapter.merged`.
    """
    if isinstance(model, LowRankAdapter):
        raise UsageError("the model itself is a LowRankAdapter", "Use model.merged() to get the merged layer.")
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LowRankAdapter)]
    for name, adapter in found:
        parent, child = _parent(model, name)
        setattr(parent, child, adapter.merged())
    return [name for name, _ in found]
