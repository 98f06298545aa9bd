"""Data sets and loaders."""

from privet.data.bundled import Split, breast_cancer

__all__ = ["Split", "breast_cancer"]
