"""Stage 2: differentially private statistics of a bundled table, charged to the privacy ledger."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_diabetes

from privet.demo.stage import DemoContext, Stage, StageReport
from privet.dp.ledger import Ledger
from privet.dp.query import run_query
from privet.errors import BudgetExceededError

TENANT, DATASET = "demo-clinic", "diabetes-visits"
SQL = "SELECT sex, COUNT(*) AS patients, AVG(bmi) AS mean_bmi, MEDIAN(age) AS median_age FROM visits GROUP BY sex"
BOUNDS = {"bmi": (15.0, 50.0), "age": (18.0, 80.0)}


def _visits() -> pd.DataFrame:
    """scikit-learn's diabetes table (442 patients, raw units), one row per patient."""
    table = load_diabetes(as_frame=True, scaled=False).frame
    table["patient_id"] = range(len(table))
    table["sex"] = table["sex"].astype(int)
    return table


def run(ctx: DemoContext, report: StageReport) -> None:
    ledger = Ledger(ctx.workspace.store)
    ledger.create(TENANT, DATASET, epsilon=2.0, delta=1e-6)
    visits = _visits()
    with ctx.task("releasing DP statistics (epsilon 1.0) charged to the ledger"):
        result = run_query(
            visits,
            SQL,
            epsilon=1.0,
            unit="patient_id",
            bounds=BOUNDS,
            keys={"sex": [1, 2]},
            charge=ledger.charger(TENANT, DATASET),
        )
    truth = visits.groupby("sex").agg(patients=("bmi", "size"), mean_bmi=("bmi", "mean"))
    released = result.table.set_index("sex")
    error = max(abs(released.loc[s, "mean_bmi"] - truth.loc[s, "mean_bmi"]) for s in truth.index)
    rows = "; ".join(
        f"sex {s}: ~{released.loc[s, 'patients']:.0f} patients, mean BMI ~{released.loc[s, 'mean_bmi']:.1f}"
        for s in released.index
    )
    report.check("DP statistics released", len(released) == 2, f"{rows} (epsilon {result.epsilon:g})")
    report.check("mean BMI close to the truth", error < 2.0, f"largest error {error:.2f} BMI points")

    status = ledger.status(TENANT, DATASET)
    spent = status.spent.epsilon if status.spent else 0.0
    report.check(
        "ledger charged before release",
        status.charges == 1 and 0.99 <= spent <= 1.0 + 1e-6,
        f"{TENANT}/{DATASET}: spent {spent:.3f} of 2.0 ({status.spent.accountant if status.spent else '-'})",
    )
    with ctx.task("asking for more than the budget has left"):
        try:
            run_query(
                visits,
                SQL,
                epsilon=1.5,
                unit="patient_id",
                bounds=BOUNDS,
                keys={"sex": [1, 2]},
                charge=ledger.charger(TENANT, DATASET),
            )
        except BudgetExceededError as exc:
            report.check(
                "over-budget query refused",
                ledger.status(TENANT, DATASET).charges == 1,
                f"refused: {exc.message.split(',')[0]}",
            )
        else:
            report.check("over-budget query refused", False, "was released")
    report.figures.update(
        epsilon_spent=round(spent, 4),
        epsilon_remaining=round(status.remaining_epsilon, 4),
        mean_bmi_abs_error=round(float(error), 3),
    )


STAGE = Stage("dp-statistics", "DP statistics and the privacy ledger", run)
