"""Package attributes imported on first use, so that importing one part of a package does not load the rest.

A simulated federated client needs privet's tensor noise, not the ledger's database layer; the CLI's start-up
needs neither SciPy nor torch. A package lists where each public name lives and hands the result of
:func:`exports` to Python as its module ``__getattr__`` (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["exports"]


def exports(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps a public name to the module that defines it (a
    name whose home is ``package.name`` is that submodule itself)."""

    def attribute(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        return module if home == f"{package}.{name}" else getattr(module, name)

    return attribute
