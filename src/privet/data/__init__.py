"""Data sets and loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privet.lazy import exports

if TYPE_CHECKING:
    from privet.data.bundled import Split, breast_cancer

__all__ = ["Split", "breast_cancer"]

# The bundled sets come from scikit-learn, which a simulated client or a partitioner must not load.
__getattr__ = exports("privet.data", dict.fromkeys(__all__, "privet.data.bundled"))
