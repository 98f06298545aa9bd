"""DP sampling benchmark: privet's exact discrete Gaussian sampler against OpenDP's, in one process.

What it measures (samples per second, single thread, this process):

- privet: ``privet.dp.discrete_gaussian(sigma, N)`` for sigma 1, 10 and 1000 (N = 1,000,000; 200,000 with
  ``--quick``). Bar (from the issue): sigma = 10 at >= 1e6 samples/s.
- OpenDP 0.16: ``make_gaussian(vector_domain(atom_domain(T=int)), l2_distance(T=int), scale=sigma)`` applied to
  a list of N' zeros (N' = 100,000; 20,000 with ``--quick``, because it runs at tens of thousands per second).
  This is OpenDP's exact discrete Gaussian (arbitrary-precision rationals). Its figure includes passing the
  Python list to Rust and back. ``opendp_ffi_clamp_per_s`` times OpenDP's clamp transformation on the same list, so
  readers can see how much of that is the boundary and not the sampler.
- also, for reference, privet's discrete Laplace (scale 10) and grid Gaussian (``privet.dp.gaussian``,
  sigma 10, default grid 2**-37) at N.

After one warm-up round of everything, ``--repeats`` rounds (default 5) alternate privet and OpenDP, with the
order swapped every round; figures are medians over rounds, and the privet/OpenDP ratios are computed round by
round and then their median is taken. Each round checks that the samples' standard deviation is within 2% of
the discrete Gaussian's.

Run::

    .venv/bin/python benchmarks/dp_sampling.py [--quick] [--repeats 5] --json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import log, machine  # benchmarks/ is on sys.path when a benchmark runs

SIGMAS = (1.0, 10.0, 1000.0)
BAR_SIGMA = 10.0
BAR_LIMIT = 1e6
FULL_N, QUICK_N = 1_000_000, 200_000
FULL_N_OPENDP, QUICK_N_OPENDP = 100_000, 20_000


def discrete_gaussian_sd(sigma: float) -> float:
    """Standard deviation of the discrete Gaussian with parameter ``sigma`` (slightly below sigma when sigma < 1)."""
    width = int(40 * sigma) + 40
    x = np.arange(-width, width + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * sigma**2))
    return float(math.sqrt((w * x**2).sum() / w.sum()))


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def check_sd(name: str, samples: Any, sigma: float) -> None:
    sd = float(np.std(np.asarray(samples, dtype=np.float64)))
    expected = discrete_gaussian_sd(sigma)
    if abs(sd / expected - 1) > 0.02:
        raise RuntimeError(f"{name}: sample sd {sd:.4g} is not within 2% of {expected:.4g}")


def benchmark(n: int, n_opendp: int, repeats: int) -> dict[str, Any]:
    import opendp.prelude as dp

    from privet.crypto.prg import default_randomness
    from privet.dp import discrete_gaussian, discrete_laplace, gaussian

    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T=int))
    opendp_gaussian = {s: dp.m.make_gaussian(domain, dp.l2_distance(T=int), scale=s) for s in SIGMAS}
    # A transformation that does next to nothing, to time the list's trip to Rust and back.
    boundary = dp.t.make_clamp(domain, dp.symmetric_distance(), bounds=(-1, 1))
    zeros = [0] * n_opendp
    rng = default_randomness()

    def privet_round() -> dict[str, float]:
        row: dict[str, float] = {}
        for sigma in SIGMAS:
            seconds, samples = timed(lambda s=sigma: discrete_gaussian(s, n, rng=rng))
            check_sd(f"privet sigma={sigma:g}", samples, sigma)
            row[f"privet_dg_sigma{sigma:g}_per_s"] = n / seconds
        seconds, _ = timed(lambda: discrete_laplace(10.0, n, rng=rng))
        row["privet_discrete_laplace_scale10_per_s"] = n / seconds
        seconds, samples = timed(lambda: gaussian(10.0, n, rng=rng))
        check_sd("privet grid gaussian", samples, 10.0)
        row["privet_grid_gaussian_sigma10_per_s"] = n / seconds
        return row

    def opendp_round() -> dict[str, float]:
        row: dict[str, float] = {}
        for sigma in SIGMAS:
            seconds, samples = timed(lambda s=sigma: opendp_gaussian[s](zeros))
            check_sd(f"opendp sigma={sigma:g}", samples, sigma)
            row[f"opendp_dg_sigma{sigma:g}_per_s"] = n_opendp / seconds
        seconds, _ = timed(lambda: boundary(zeros))
        row["opendp_ffi_clamp_per_s"] = n_opendp / seconds
        return row

    log(f"dp_sampling: warm-up (privet N={n:,}, OpenDP N={n_opendp:,}; not counted)")
    privet_round()
    opendp_round()
    rows: list[dict[str, float]] = []
    for index in range(repeats):
        # Alternate which side goes first, so slow drift (frequency, cache, other load) favours neither.
        row = privet_round() | opendp_round() if index % 2 == 0 else opendp_round() | privet_round()
        for sigma in SIGMAS:
            row[f"ratio_sigma{sigma:g}"] = (
                row[f"privet_dg_sigma{sigma:g}_per_s"] / row[f"opendp_dg_sigma{sigma:g}_per_s"]
            )
        rows.append(row)
        log(
            f"dp_sampling: repeat {index + 1}/{repeats}: "
            + ", ".join(
                f"sigma {s:g}: privet {row[f'privet_dg_sigma{s:g}_per_s']:.3g}/s, "
                f"OpenDP {row[f'opendp_dg_sigma{s:g}_per_s']:.3g}/s"
                for s in SIGMAS
            )
        )
    figures: dict[str, Any] = {"n_privet": n, "n_opendp": n_opendp, "repeats": repeats}
    for name in rows[0]:
        value = statistics.median(row[name] for row in rows)
        figures[name] = round(value, 1) if "ratio" in name else round(value)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for CI smoke runs (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    n, n_opendp = (QUICK_N, QUICK_N_OPENDP) if args.quick else (FULL_N, FULL_N_OPENDP)
    figures = benchmark(n, n_opendp, args.repeats)
    value = figures[f"privet_dg_sigma{BAR_SIGMA:g}_per_s"]
    bars = {"discrete_gaussian_samples_per_s": {"value": value, "limit": BAR_LIMIT, "ok": value >= BAR_LIMIT}}
    for name, bar in bars.items():
        log(f"dp_sampling: bar {name}: {bar['value']:.4g} (limit {bar['limit']:.0e}) {'ok' if bar['ok'] else 'FAILED'}")
    log("dp_sampling: " + ", ".join(f"{name}={value}" for name, value in figures.items()))
    if args.json:
        report = {
            "benchmark": "dp_sampling",
            "machine": machine(),
            "figures": figures,
            "bars": bars,
            "notes": (
                "Single-threaded samples per second. privet: exact discrete Gaussian (CKS 2020 rejection from "
                "discrete Laplace, AES-256-CTR randomness, float fast path with exact rational fallback). OpenDP: "
                "make_gaussian on integer vectors (exact, arbitrary precision); its figure includes the "
                "Python-to-Rust list conversion, which opendp_ffi_clamp_per_s isolates. Ratios are privet / "
                "OpenDP per round, median over rounds."
            ),
        }
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
