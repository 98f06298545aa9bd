"""Differential privacy: exact noise mechanisms, accounting, the privacy ledger, DP statistics and DP-SGD."""

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

# DP-SGD needs torch; it is imported on first use so that the ledger and statistics stay quick to load.
_SGD = frozenset({"make_private", "train_private"})


def __getattr__(name: str) -> object:
    if name in _SGD:
        from privet.dp import sgd

        return getattr(sgd, name)
    raise AttributeError(f"module 'privet.dp' has no attribute {name!r}")
