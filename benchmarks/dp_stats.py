"""DP statistics benchmark: the error of privet's count, mean and median against OpenDP's, on UCI Adult,
and discrete Gaussian samples per second beside OpenDP's sampler (via ``dp_sampling.benchmark``).

What it measures: for ``age`` (bounds [17, 90]) and ``hours_per_week`` (bounds [0, 100]) of UCI Adult's
``adult.data`` (32,561 rows, one person per row: the privacy unit is a row, add/remove neighbours), at
epsilon 0.1 and 1, the absolute error of repeated releases against the true value:

- count: privet ``stats.count`` (discrete Laplace, scale 1/eps) vs OpenDP ``make_count >> make_laplace``.
- mean, size unknown (like-for-like: the number of rows is private in both): privet ``stats.mean`` (noisy
  centred sum / noisy count, eps/2 each) vs the better of two OpenDP estimators, each at eps/2 + eps/2:
  ``sumcount`` (``make_clamp >> make_sum`` and ``make_count``, Laplace each, divided) and ``resize`` (OpenDP's
  documented workflow: a noisy count, then ``make_clamp >> make_resize(size=noisy count) >> make_mean`` with
  Laplace). ``opendp_known_n`` (``make_resize`` to the true n, ``make_mean``, all of eps) is reported as a
  reference only: it treats n as public, a weaker guarantee, so it has no bar.
- median: privet ``stats.quantile(q=0.5)`` vs OpenDP ``make_private_quantile`` (its score, then
  ``make_noisy_max``), both report-noisy-max with exponential noise (permute-and-flip) over the same integer
  candidates (the data are integers). On all 32,561 rows both nearly always return the exact median, so the
  comparison also runs for age on a fixed random subsample of 100 rows (a small group), where the noise
  matters (hours_per_week is 40 for almost half the people, so its median stays exact even there).

Each privet release runs the whole public API on the DataFrame (validation, clamping, exact sums, its CSPRNG
noise). Each OpenDP measurement is the documented chain, its privacy map checked to be <= the target epsilon
at d_in = 1; because one call on 32,561 Python floats takes 40-90 ms, the chain's deterministic
transformation is evaluated once and its noise measurement (the same measurement, on that output) once per
repetition, which gives exactly the chain's output distribution. The resize workflow cannot be split that way
(its size is the noisy count and truncation samples rows), so it runs whole, with fewer repetitions.

Privet and OpenDP alternate within each repetition (who goes first alternates too). Figures: mean absolute
error (MAE) and RMSE over all repetitions. Bars: for each statistic, column and epsilon, the paired repetitions
are cut into 20 blocks (fewer if a block would hold under 50), privet's MAE is divided by OpenDP's block by
block (a block where both are 0 counts as 1), and the median ratio must be <= 1.05. Where both libraries run
the same mechanism (count, median) the true ratio is 1: the full run's repetitions put the bar about three
standard errors away; ``--quick`` has too few repetitions for those bars to mean much (a smoke run).

A sanity check first runs privet releases with numpy's random functions disabled and privet's samplers
counted, to show the noise comes from privet's exact samplers (bar ``noise_from_privet_samplers``).

Run::

    .venv/bin/python benchmarks/dp_stats.py [--quick] --json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

# The shared data sets sit beside the project (../shared/data); PRIVET_ADULT points elsewhere.
SHARED_ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult" / "adult.data"
ADULT = Path(os.environ.get("PRIVET_ADULT", str(SHARED_ADULT)))
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
BOUNDS = {"age": (17.0, 90.0), "hours_per_week": (0.0, 100.0)}
EPSILONS = (0.1, 1.0)
SUBSAMPLE = 100  # rows in the small-group median comparison
BLOCKS = 20
RATIO_LIMIT = 1.05
# Repetitions. Count and the small-group median compare identical mechanisms (true ratio 1), so the full run
# gives them enough for the block-median ratio's standard error to be about 0.016 (a chance failure of the 1.05
# bar about 0.1%); --quick has too few for its bars to mean much.
FULL = {"count": 20000, "mean": 3000, "median": 3000, "median_small": 20000, "resize": 250}
QUICK = {"count": 2000, "mean": 200, "median": 100, "median_small": 1500, "resize": 16}


def load_adult(path: Path) -> pd.DataFrame:
    from privet.data.tables import load_table

    return load_table(path, format="csv", columns=ADULT_COLUMNS, na_values=["?"])


# -- OpenDP side -----------------------------------------------------------------------------------------------


class OpenDP:
    """OpenDP 0.16 measurements for one column, built once; privacy maps checked against epsilon."""

    def __init__(self, values: np.ndarray, lower: float, upper: float, candidates: list[float]) -> None:
        import opendp.prelude as dp

        dp.enable_features("contrib")
        self.dp = dp
        self.values = values.astype(np.float64)
        self.lower, self.upper = lower, upper
        self.candidates = candidates
        self.space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
        self.t_count = self.space >> dp.t.then_count()
        self.t_sum = self.space >> dp.t.then_clamp((lower, upper)) >> dp.t.then_sum()
        self.t_score = self.space >> dp.t.then_quantile_score_candidates(candidates, 0.5)
        self.t_known = (
            self.space
            >> dp.t.then_clamp((lower, upper))
            >> dp.t.then_resize(size=len(values), constant=(lower + upper) / 2)
            >> dp.t.then_mean()
        )
        # The deterministic transformations, evaluated once (see the module docstring).
        self.count_value = self.t_count(self.values)
        self.sum_value = self.t_sum(self.values)
        self.scores = self.t_score(self.values)
        self.known_value = self.t_known(self.values)

    def _scale(self, chain: Callable[[float], Any], epsilon: float, guess: float) -> float:
        """A scale >= guess, within a few parts per billion, whose chain's privacy map at d_in=1 is <= epsilon.

        The guess is the textbook sensitivity / epsilon; OpenDP's maps round conservatively, so it may need a
        nudge up (the step doubles, so this takes a few tries).
        """
        step = 1e-12
        scale = guess
        while chain(scale).map(1) > epsilon:
            scale = guess * (1 + step)
            step *= 2
        return scale

    def count_noise(self, epsilon: float) -> Any:
        dp = self.dp
        scale = self._scale(lambda s: self.t_count >> dp.m.then_laplace(s), epsilon, 1 / epsilon)
        return dp.m.make_laplace(self.t_count.output_domain, self.t_count.output_metric, scale)

    def sum_noise(self, epsilon: float) -> Any:
        dp = self.dp
        guess = max(abs(self.lower), abs(self.upper)) / epsilon
        scale = self._scale(lambda s: self.t_sum >> dp.m.then_laplace(s), epsilon, guess)
        return dp.m.make_laplace(self.t_sum.output_domain, self.t_sum.output_metric, scale)

    def known_noise(self, epsilon: float) -> Any:
        dp = self.dp
        guess = (self.upper - self.lower) / len(self.values) / epsilon
        scale = self._scale(lambda s: self.t_known >> dp.m.then_laplace(s), epsilon, guess)
        return dp.m.make_laplace(self.t_known.output_domain, self.t_known.output_metric, scale)

    def median_noise(self, epsilon: float) -> Any:
        dp = self.dp
        reference = dp.m.make_private_quantile(*self.space, dp.max_divergence(), self.candidates, 0.5, 1 / epsilon)
        # make_private_quantile scales its integer scores' noise by alpha's denominator (2 for the median).
        scale = self._scale(
            lambda s: self.t_score >> dp.m.then_noisy_max(dp.max_divergence(), s, negate=True), epsilon, 2 / epsilon
        )
        assert reference.map(1) <= epsilon + 1e-12
        return dp.m.make_noisy_max(
            self.t_score.output_domain, self.t_score.output_metric, dp.max_divergence(), scale, negate=True
        )

    def resize_mean(self, epsilon: float, count_noise: Any) -> float:
        """OpenDP's documented unknown-size workflow: a noisy count (eps/2), then a sized mean (eps/2)."""
        dp = self.dp
        size = max(int(count_noise(self.count_value)), 1)
        transformation = (
            self.space
            >> dp.t.then_clamp((self.lower, self.upper))
            >> dp.t.then_resize(size=size, constant=(self.lower + self.upper) / 2)
            >> dp.t.then_mean()
        )
        guess = (self.upper - self.lower) / size / (epsilon / 2)
        scale = self._scale(lambda s: transformation >> dp.m.then_laplace(s), epsilon / 2, guess)
        return float((transformation >> dp.m.then_laplace(scale))(self.values))


# -- statistics ------------------------------------------------------------------------------------------------


def block_ratio(privet: list[float], opendp: list[float]) -> float:
    """Median over blocks of privet's MAE / OpenDP's MAE (both 0: 1; only OpenDP's 0: inf).

    BLOCKS blocks of paired repetitions, fewer when there are under 50 pairs per block (one block: the pooled
    ratio), so that no block's MAE rests on a handful of draws.
    """
    blocks = max(1, min(BLOCKS, len(privet) // 50))
    ratios = []
    for p_block, o_block in zip(
        np.array_split(np.abs(privet), blocks), np.array_split(np.abs(opendp), blocks), strict=True
    ):
        p, o = float(p_block.mean()), float(o_block.mean())
        ratios.append(1.0 if p == o == 0 else (math.inf if o == 0 else p / o))
    return float(statistics.median(ratios))


def pooled_ratio(privet: list[float], opendp: list[float]) -> float:
    """Privet's MAE over OpenDP's, over all repetitions (both 0: 1)."""
    p, o = float(np.abs(privet).mean()), float(np.abs(opendp).mean())
    return 1.0 if p == o == 0 else (math.inf if o == 0 else p / o)


def summarize(errors: list[float]) -> dict[str, float]:
    array = np.asarray(errors, dtype=np.float64)
    return {"mae": float(np.abs(array).mean()), "rmse": float(np.sqrt((array**2).mean()))}


@contextlib.contextmanager
def privet_noise_only() -> Iterator[dict[str, int]]:
    """Count privet's sampler calls and make numpy's random functions fail, for the duration."""
    from privet.dp import mechanisms

    calls = {"discrete_laplace": 0, "laplace": 0, "report_noisy_max": 0}
    saved_mech = {name: getattr(mechanisms, name) for name in calls}
    saved_np = {name: getattr(np.random, name) for name in ("default_rng", "laplace", "normal", "random", "choice")}

    def counted(name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return saved_mech[name](*args, **kwargs)

        return wrapper

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("numpy's RNG was used for privacy noise")

    try:
        for name in calls:
            setattr(mechanisms, name, counted(name))
        for name in saved_np:
            setattr(np.random, name, forbidden)
        yield calls
    finally:
        for name, value in saved_mech.items():
            setattr(mechanisms, name, value)
        for name, value in saved_np.items():
            setattr(np.random, name, value)


def check_noise_source(table: pd.DataFrame) -> bool:
    from privet.dp import stats

    with privet_noise_only() as calls:
        stats.count(table, epsilon=1.0)
        stats.mean(table, "age", bounds=BOUNDS["age"], epsilon=1.0)
        stats.quantile(table, "age", 0.5, bounds=BOUNDS["age"], candidates=range(17, 91), epsilon=1.0)
    log(f"dp_stats: privet sampler calls with numpy's RNG disabled: {calls}")
    return calls == {"discrete_laplace": 2, "laplace": 1, "report_noisy_max": 1}


def alternate(index: int, first: Callable[[], float], second: Callable[[], float]) -> tuple[float, float]:
    """Run both, the order alternating by repetition; returns (first's, second's) results."""
    if index % 2 == 0:
        a = first()
        b = second()
    else:
        b = second()
        a = first()
    return a, b


def bench_count(table: pd.DataFrame, epsilon: float, reps: int) -> dict[str, Any]:
    from privet.dp import stats

    truth = len(table)
    opendp = OpenDP(table["age"].to_numpy(), *BOUNDS["age"], [float(c) for c in range(17, 91)])
    noise = opendp.count_noise(epsilon)
    pairs = [
        alternate(
            i,
            lambda: float(stats.count(table, epsilon=epsilon).value - truth),
            lambda: float(noise(opendp.count_value) - truth),
        )
        for i in range(reps)
    ]
    privet, other = [p for p, _ in pairs], [o for _, o in pairs]
    return {
        "privet": summarize(privet),
        "opendp": summarize(other),
        "ratio": block_ratio(privet, other),
        "ratio_pooled": pooled_ratio(privet, other),
    }


def bench_mean(table: pd.DataFrame, column: str, epsilon: float, reps: int, resize_reps: int) -> dict[str, Any]:
    from privet.dp import stats

    lower, upper = BOUNDS[column]
    values = table[column].to_numpy(dtype=np.float64)
    truth = float(np.clip(values, lower, upper).mean())
    opendp = OpenDP(values, lower, upper, [float(c) for c in range(int(lower), int(upper) + 1)])
    half_count, half_sum = opendp.count_noise(epsilon / 2), opendp.sum_noise(epsilon / 2)
    known = opendp.known_noise(epsilon)

    def opendp_sumcount() -> float:
        return float(half_sum(opendp.sum_value) / max(half_count(opendp.count_value), 1))

    privet, sumcount, known_n, resize = [], [], [], []
    resize_every = max(1, reps // resize_reps)
    for i in range(reps):
        p, o = alternate(
            i, lambda: stats.mean(table, column, bounds=(lower, upper), epsilon=epsilon).value, opendp_sumcount
        )
        privet.append(p - truth)
        sumcount.append(o - truth)
        known_n.append(float(known(opendp.known_value)) - truth)
        if i % resize_every == 0 and len(resize) < resize_reps:
            resize.append(opendp.resize_mean(epsilon, half_count) - truth)
    candidates = {"sumcount": sumcount, "resize": resize}
    best = min(candidates, key=lambda name: summarize(candidates[name])["mae"])
    # The resize workflow ran on every resize_every-th repetition: pair it with privet's from the same ones.
    privet_at_resize = privet[::resize_every][: len(resize)]
    privet_for_best = privet if best == "sumcount" else privet_at_resize
    return {
        "privet": summarize(privet),
        "opendp_sumcount": summarize(sumcount),
        "opendp_resize": summarize(resize),
        "opendp_known_n": summarize(known_n),
        "opendp_best": best,
        "ratio": block_ratio(privet_for_best, candidates[best]),
        "ratio_pooled_vs_sumcount": pooled_ratio(privet, sumcount),
        "ratio_pooled_vs_resize": pooled_ratio(privet_at_resize, resize),
        "resize_reps": len(resize),
    }


def bench_median(table: pd.DataFrame, column: str, epsilon: float, reps: int) -> dict[str, Any]:
    from privet.dp import stats

    lower, upper = BOUNDS[column]
    candidates = [float(c) for c in range(int(lower), int(upper) + 1)]
    values = table[column].to_numpy(dtype=np.float64)
    truth = float(np.median(np.clip(values, lower, upper)))
    opendp = OpenDP(values, lower, upper, candidates)
    noise = opendp.median_noise(epsilon)
    pairs = [
        alternate(
            i,
            lambda: (
                stats.quantile(table, column, 0.5, bounds=(lower, upper), candidates=candidates, epsilon=epsilon).value
                - truth
            ),
            lambda: candidates[int(noise(opendp.scores))] - truth,
        )
        for i in range(reps)
    ]
    privet, other = [p for p, _ in pairs], [o for _, o in pairs]
    return {
        "privet": summarize(privet),
        "opendp": summarize(other),
        "ratio": block_ratio(privet, other),
        "ratio_pooled": pooled_ratio(privet, other),
    }


def finite(value: float, digits: int) -> float:
    """JSON has no infinity: a ratio against an error of exactly 0 is reported as 1e9."""
    return round(value, digits) if math.isfinite(value) else 1e9


def run(path: Path, counts: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    table = load_adult(path)
    small = table.sample(n=SUBSAMPLE, random_state=20240601).reset_index(drop=True)  # fixed, public choice
    noise_ok = check_noise_source(table)
    figures: dict[str, Any] = {"rows": len(table), "small_group_rows": SUBSAMPLE}
    figures.update({f"repetitions_{name}": number for name, number in counts.items()})
    details: dict[str, Any] = {"privet_noise_from_privet_samplers": noise_ok}
    bars: dict[str, Any] = {}

    def record(name: str, result: dict[str, Any]) -> None:
        for key, value in result.items():
            if isinstance(value, dict):
                for metric, number in value.items():
                    figures[f"{name}_{key}_{metric}"] = finite(number, 6)
            elif isinstance(value, str):
                details[f"{name}_{key}"] = value
            else:
                figures[f"{name}_{key}"] = finite(float(value), 4)
        ratio = result["ratio"]
        bars[f"{name}_error_ratio"] = {"value": finite(ratio, 4), "limit": RATIO_LIMIT, "ok": ratio <= RATIO_LIMIT}
        log(f"dp_stats: {name}: privet {result['privet']}, ratio {ratio:.4f}")

    for epsilon in EPSILONS:
        tag = f"eps{epsilon:g}"
        start = time.perf_counter()
        record(f"count_{tag}", bench_count(table, epsilon, counts["count"]))
        for column in BOUNDS:
            record(f"mean_{column}_{tag}", bench_mean(table, column, epsilon, counts["mean"], counts["resize"]))
            record(f"median_{column}_{tag}", bench_median(table, column, epsilon, counts["median"]))
        record(f"median_age_{SUBSAMPLE}rows_{tag}", bench_median(small, "age", epsilon, counts["median_small"]))
        log(f"dp_stats: epsilon {epsilon:g} took {time.perf_counter() - start:.1f} s")
    bars["noise_from_privet_samplers"] = {"value": 1 if noise_ok else 0, "limit": 1, "ok": noise_ok}
    return figures, bars, details


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("--data", type=Path, default=ADULT, help="path of UCI Adult's adult.data")
    args = parser.parse_args()

    from importlib.metadata import version

    counts = QUICK if args.quick else FULL
    started = time.perf_counter()
    figures, bars, details = run(args.data, counts)
    # The sampling figure travels with the statistics: the same sampler comparison as
    # benchmarks/dp_sampling.py (which also runs alone), measured in this run.
    import dp_sampling

    sizes = (
        (dp_sampling.QUICK_N, dp_sampling.QUICK_N_OPENDP)
        if args.quick
        else (
            dp_sampling.FULL_N,
            dp_sampling.FULL_N_OPENDP,
        )
    )
    sampling = dp_sampling.benchmark(*sizes, repeats=5)
    figures.update({f"sampling_{name}": value for name, value in sampling.items()})
    rate = sampling[f"privet_dg_sigma{dp_sampling.BAR_SIGMA:g}_per_s"]
    limit = dp_sampling.BAR_LIMIT
    bars["discrete_gaussian_samples_per_s"] = {"value": rate, "limit": limit, "ok": rate >= limit}
    details["opendp_version"] = version("opendp")
    figures["seconds"] = round(time.perf_counter() - started, 1)
    log_bars("dp_stats", bars)
    notes = (
        "Errors are absolute errors against the true (clamped) value over repeated releases; the privacy unit is a"
        " row (add/remove) for both libraries. Bars: median over 20 blocks of privet MAE / OpenDP MAE (a block"
        " where both are 0 counts as 1). Mean bars compare with OpenDP's better unknown-size estimator"
        " (details *_opendp_best); opendp_known_n treats n as public and is a reference only. Median figures use"
        f" the same integer candidates for both; median_age_{SUBSAMPLE}rows_* uses a fixed random {SUBSAMPLE}-row"
        " subsample (a small group, where the selection is noisy)."
        " OpenDP chains are evaluated as transformation once + noise measurement per repetition (same output"
        " distribution); the resize workflow runs whole with fewer repetitions."
    )
    if args.json:
        emit("dp_stats", figures, bars, notes, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
