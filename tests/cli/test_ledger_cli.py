"""``privet dp epsilon`` and ``privet ledger`` as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import one_error_line, run


def test_dp_epsilon_matches_published_figures(tmp_path: Path) -> None:
    args = ["dp", "epsilon", "--noise", "1.1", "--sample-rate", "0.0042667", "--steps", "14062", "--delta", "1e-5"]
    pld = json.loads(run(tmp_path, *args, "--accountant", "pld", "--json").stdout)
    rdp = json.loads(run(tmp_path, *args, "--accountant", "rdp", "--json").stdout)
    assert pld["accountant"] == "pld" and pld["epsilon"] == pytest.approx(2.38, abs=0.01)
    assert rdp["accountant"] == "rdp" and rdp["epsilon"] == pytest.approx(2.60, abs=0.01)
    one_error_line(run(tmp_path, "dp", "epsilon", "--noise", "-1", code=2))
    one_error_line(run(tmp_path, "dp", "epsilon", "--noise", "1", "--accountant", "sum", code=2))


def test_ledger_create_show_history(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "ledger", "create", "--tenant", "clinic", "--dataset", "visits", "--epsilon", "2", "--delta", "1e-6")
    again = run(home, "ledger", "create", "--tenant", "clinic", "--dataset", "visits", "--epsilon", "5", code=2)
    assert "already exists" in one_error_line(again)
    shown = json.loads(run(home, "ledger", "show", "--json").stdout)["budgets"]
    assert shown == [
        {
            "tenant": "clinic",
            "dataset": "visits",
            "budget": {"epsilon": 2.0, "delta": 1e-6, "accountant": "pld"},
            "spent": None,
            "remaining_epsilon": 2.0,
            "charges": 0,
        }
    ]
    history = json.loads(run(home, "ledger", "history", "--tenant", "clinic", "--dataset", "visits", "--json").stdout)
    assert history["charges"] == []
    missing = run(home, "ledger", "history", "--tenant", "clinic", "--dataset", "nope", code=2)
    assert "no privacy budget" in one_error_line(missing)


def test_dp_query_charges_the_ledger_and_refuses_past_the_budget(tmp_path: Path) -> None:
    home = tmp_path / "home"
    table = tmp_path / "visits.csv"
    rows = ["person,dept,salary"] + [f"{i},{'ab'[i % 2]},{1000 + i}" for i in range(400)]
    table.write_text("\n".join(rows) + "\n")
    query = ["dp", "query", str(table), "--tenant", "clinic", "--unit", "person", "--bounds", "salary=0:5000"]
    sql = "SELECT dept, COUNT(*) AS n, AVG(salary) AS pay FROM visits WHERE salary > 1010 GROUP BY dept"
    no_budget = run(home, *query, "--sql", sql, "--epsilon", "0.5", code=2)
    assert "no privacy budget" in one_error_line(no_budget)

    run(home, "ledger", "create", "--tenant", "clinic", "--dataset", "visits", "--epsilon", "1")
    released = json.loads(run(home, *query, "--sql", sql, "--epsilon", "0.6", "--json").stdout)
    assert {row["dept"] for row in released["rows"]} <= {"a", "b"}
    assert released["epsilon"] == pytest.approx(0.6)
    refused = run(home, *query, "--sql", sql, "--epsilon", "0.6", code=1)
    assert "would" in one_error_line(refused) and "Nothing was released" in refused.stderr
    history = json.loads(run(home, "ledger", "history", "--tenant", "clinic", "--dataset", "visits", "--json").stdout)
    [charge] = history["charges"]
    assert "1010" not in charge["description"]  # literals never reach the ledger
    unsupported = run(home, *query, "--sql", "SELECT COUNT(*) FROM a JOIN b ON a.x = b.x", "--epsilon", "0.1", code=2)
    assert "JOIN" in one_error_line(unsupported)
