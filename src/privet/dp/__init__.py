"""Differential privacy: noise mechanisms with exact, floating-point-safe sampling."""

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

__all__ = [
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
    "randomized_response",
    "report_noisy_max",
    "snap",
]
