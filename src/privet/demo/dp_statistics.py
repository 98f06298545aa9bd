"""Stage 2: differentially private statistics of a bundled table, charged to the privacy ledger."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_diabetes

from privet.demo.stage import DemoContext, Stage, StageReport
from privet.dp.ledger import Ledger
from privet.dp.query import QueryResult, run_query
from privet.errors import BudgetExceededError

TENANT, DATASET = "demo-clinic", "diabetes-visits"
SQL = "SELECT sex, COUNT(*) AS patients, AVG(bmi) AS mean_bmi, MEDIAN(age) AS median_age FROM visits GROUP BY sex"
BOUNDS = {"bmi": (18.0, 42.0), "age": (18.0, 80.0)}
BUDGET, SPEND = 3.0, 2.0
# Mean BMI error: Laplace noise on a sum of ~200 clamped values, scale about 24 / (2/6): 4 BMI points is over
# 10 noise scales for each group, so the check fails by chance less than once in 10,000 runs.
TOLERANCE = 4.0


def _visits() -> pd.DataFrame:
    """scikit-learn's diabetes table (442 patients, raw units), one row per patient."""
    table = load_diabetes(as_frame=True, scaled=False).frame
    table["patient_id"] = range(len(table))
    table["sex"] = table["sex"].astype(int)
    return table


def _release(ledger: Ledger, visits: pd.DataFrame, epsilon: float) -> QueryResult:
    """The stage's query; the sexes are public keys, so no partition selection (and no delta) is needed."""
    return run_query(
        visits,
        SQL,
        epsilon=epsilon,
        unit="patient_id",
        bounds=BOUNDS,
        keys={"sex": [1, 2]},
        charge=ledger.charger(TENANT, DATASET),
    )


def run(ctx: DemoContext, report: StageReport) -> None:
    ledger = Ledger(ctx.workspace.store)
    ledger.create(TENANT, DATASET, epsilon=BUDGET, delta=1e-6)
    visits = _visits()
    with ctx.task(f"releasing DP statistics (epsilon {SPEND}) charged to the ledger"):
        result = _release(ledger, visits, SPEND)
    truth = visits.groupby("sex").agg(patients=("bmi", "size"), mean_bmi=("bmi", "mean"))
    released = result.table.set_index("sex")
    error = max(abs(released.loc[s, "mean_bmi"] - truth.loc[s, "mean_bmi"]) for s in truth.index)
    rows = "; ".join(
        f"sex {s}: ~{released.loc[s, 'patients']:.0f} patients, mean BMI ~{released.loc[s, 'mean_bmi']:.1f}"
        for s in released.index
    )
    report.check("DP statistics released", len(released) == 2, f"{rows} (epsilon {result.epsilon:g})")
    report.check("mean BMI close to the truth", bool(error < TOLERANCE), f"largest error {error:.2f} BMI points")

    status = ledger.status(TENANT, DATASET)
    spent = status.spent.epsilon if status.spent else 0.0
    report.check(
        "ledger charged before release",
        status.charges == 1 and SPEND - 0.01 <= spent <= SPEND + 1e-6,
        f"{TENANT}/{DATASET}: spent {spent:.3f} of {BUDGET} ({status.spent.accountant if status.spent else '-'})",
    )
    with ctx.task("asking for more than the budget has left"):
        try:
            _release(ledger, visits, 1.5)
        except BudgetExceededError:
            report.check(
                "over-budget query refused",
                ledger.status(TENANT, DATASET).charges == 1,
                f"epsilon 1.5 more would pass {BUDGET}: refused, nothing released or charged",
            )
        else:
            report.check("over-budget query refused", False, "was released")
    report.figures.update(
        epsilon_spent=round(spent, 4),
        epsilon_remaining=round(status.remaining_epsilon, 4),
        mean_bmi_abs_error=round(float(error), 3),
    )


STAGE = Stage("dp-statistics", "DP statistics and the privacy ledger", run)
