"""Federated learning: strategies and robust aggregation (:mod:`.strategies`, :mod:`.aggregate`)."""

from privet.federated.strategies import STRATEGIES, Strategy, make_strategy

__all__ = ["STRATEGIES", "Strategy", "make_strategy"]
