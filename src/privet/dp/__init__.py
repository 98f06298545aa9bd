"""Differential privacy: exact noise mechanisms, accounting, the privacy ledger, DP statistics and DP-SGD."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privet.lazy import exports

if TYPE_CHECKING:
    from privet.dp import stats
    from privet.dp.accounting import (
        ApproxEvent,
        DiscreteGaussianEvent,
        DiscreteLaplaceEvent,
        Event,
        GaussianEvent,
        Guarantee,
        LaplaceEvent,
        PureEvent,
        ZCDPEvent,
        calibrate_gaussian,
        compose_delta,
        compose_epsilon,
    )
    from privet.dp.ledger import Budget, Ledger
    from privet.dp.mechanisms import (
        default_granularity,
        discrete_gaussian,
        discrete_laplace,
        exponential,
        gaussian,
        gaussian_rho,
        gaussian_sigma,
        grid_sensitivity,
        laplace,
        laplace_epsilon,
        laplace_scale,
        randomized_response,
        report_noisy_max,
        snap,
    )
    from privet.dp.query import QueryResult, run_query
    from privet.dp.sgd import make_private, train_private

__all__ = [
    "ApproxEvent",
    "Budget",
    "DiscreteGaussianEvent",
    "DiscreteLaplaceEvent",
    "Event",
    "GaussianEvent",
    "Guarantee",
    "LaplaceEvent",
    "Ledger",
    "PureEvent",
    "QueryResult",
    "ZCDPEvent",
    "calibrate_gaussian",
    "compose_delta",
    "compose_epsilon",
    "default_granularity",
    "discrete_gaussian",
    "discrete_laplace",
    "exponential",
    "gaussian",
    "gaussian_rho",
    "gaussian_sigma",
    "grid_sensitivity",
    "laplace",
    "laplace_epsilon",
    "laplace_scale",
    "make_private",
    "randomized_response",
    "report_noisy_max",
    "run_query",
    "snap",
    "stats",
    "train_private",
]

# Each name is imported from its module on first use: importing one part of privet.dp (the tensor noise a
# federated client needs, the ledger the CLI opens) must not load SciPy, dp-accounting and torch with it.
_HOME = {
    "stats": "privet.dp.stats",
    "ApproxEvent": "privet.dp.accounting",
    "DiscreteGaussianEvent": "privet.dp.accounting",
    "DiscreteLaplaceEvent": "privet.dp.accounting",
    "Event": "privet.dp.accounting",
    "GaussianEvent": "privet.dp.accounting",
    "Guarantee": "privet.dp.accounting",
    "LaplaceEvent": "privet.dp.accounting",
    "PureEvent": "privet.dp.accounting",
    "ZCDPEvent": "privet.dp.accounting",
    "calibrate_gaussian": "privet.dp.accounting",
    "compose_delta": "privet.dp.accounting",
    "compose_epsilon": "privet.dp.accounting",
    "Budget": "privet.dp.ledger",
    "Ledger": "privet.dp.ledger",
    "default_granularity": "privet.dp.mechanisms",
    "discrete_gaussian": "privet.dp.mechanisms",
    "discrete_laplace": "privet.dp.mechanisms",
    "exponential": "privet.dp.mechanisms",
    "gaussian": "privet.dp.mechanisms",
    "gaussian_rho": "privet.dp.mechanisms",
    "gaussian_sigma": "privet.dp.mechanisms",
    "grid_sensitivity": "privet.dp.mechanisms",
    "laplace": "privet.dp.mechanisms",
    "laplace_epsilon": "privet.dp.mechanisms",
    "laplace_scale": "privet.dp.mechanisms",
    "randomized_response": "privet.dp.mechanisms",
    "report_noisy_max": "privet.dp.mechanisms",
    "snap": "privet.dp.mechanisms",
    "QueryResult": "privet.dp.query",
    "run_query": "privet.dp.query",
    "make_private": "privet.dp.sgd",
    "train_private": "privet.dp.sgd",
}

__getattr__ = exports("privet.dp", _HOME)
