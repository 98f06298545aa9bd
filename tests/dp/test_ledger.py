"""The privacy ledger on SQLite and PostgreSQL: budgets, composition, refusal, and atomic concurrent charges."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from privet.dp.accounting import GaussianEvent, PureEvent, compose_epsilon
from privet.dp.ledger import Ledger
from privet.errors import BudgetExceededError, NotFoundError, UsageError
from privet.store import ChargeRecord, Store

STEP = PureEvent(epsilon=0.1)


def test_budget_lifecycle(store: Store) -> None:
    ledger = Ledger(store)
    budget = ledger.create("hospital-a", "admissions", epsilon=1.0, delta=1e-6)
    assert (budget.epsilon, budget.delta, budget.accountant) == (1.0, 1e-6, "pld")
    with pytest.raises(UsageError, match="already exists"):
        ledger.create("hospital-a", "admissions", epsilon=9.0, delta=1e-6)
    assert ledger.status("hospital-a", "admissions").spent is None

    after = ledger.charge("hospital-a", "admissions", [STEP, STEP], "two counts")
    assert after.accountant == "pld" and 0.19 <= after.epsilon <= 0.2 + 1e-6
    status = ledger.status("hospital-a", "admissions")
    assert status.charges == 1 and status.spent is not None
    assert status.remaining_epsilon == pytest.approx(1.0 - status.spent.epsilon)
    [charge] = ledger.history("hospital-a", "admissions")
    assert charge.description == "two counts" and charge.events == (STEP, STEP)

    with pytest.raises(BudgetExceededError, match="over its budget"):
        ledger.charge("hospital-a", "admissions", [PureEvent(epsilon=0.9)], "too much")
    assert len(ledger.history("hospital-a", "admissions")) == 1  # a refusal records nothing


def test_composition_is_not_a_naive_sum(store: Store) -> None:
    """DP-SGD-like Gaussian steps: the accountant admits far more than a sum of per-step epsilons would."""
    ledger = Ledger(store)
    ledger.create("bank", "transactions", epsilon=3.0, delta=1e-5)
    step = GaussianEvent(noise_multiplier=1.1, sample_rate=256 / 60000, steps=1000)
    single = compose_epsilon([step], 1e-5).epsilon
    total = None
    for _ in range(10):
        total = ledger.charge("bank", "transactions", [step], "1000 DP-SGD steps")
    assert total is not None and total.epsilon < 3.0 < 10 * single


def test_refusals_are_clear(store: Store) -> None:
    ledger = Ledger(store)
    with pytest.raises(NotFoundError, match="no privacy budget"):
        ledger.charge("nobody", "nothing", [STEP], "count")
    for bad in ({"epsilon": 0.0, "delta": 1e-6}, {"epsilon": float("inf"), "delta": 0}, {"epsilon": 1, "delta": 1}):
        with pytest.raises(UsageError):
            ledger.create("t", "d", **bad)
    with pytest.raises(UsageError):
        ledger.create("t", "d", epsilon=1, delta=0, accountant="naive-sum")
    with pytest.raises(UsageError):
        ledger.create("t\n", "d", epsilon=1, delta=0)
    ledger.create("t", "d", epsilon=1, delta=0)
    with pytest.raises(UsageError):
        ledger.charge("t", "d", [], "nothing")


def _admitting_fifty(ledger: Ledger) -> None:
    fifty = compose_epsilon([STEP] * 50, 1e-6).epsilon
    fifty_one = compose_epsilon([STEP] * 51, 1e-6).epsilon
    assert fifty < fifty_one
    ledger.create("tenant", "data", epsilon=(fifty + fifty_one) / 2, delta=1e-6)


def _charge_many(url: str, count: int, results: multiprocessing.Queue) -> None:  # runs in a child process
    store = Store.open(url)
    ledger = Ledger(store)
    ok = 0
    for _ in range(count):
        try:
            ledger.charge("tenant", "data", [STEP], "count")
            ok += 1
        except BudgetExceededError:
            pass
    store.close()
    results.put(ok)


def test_two_hundred_concurrent_charges_admit_exactly_fifty(store_url: str) -> None:
    """100 charges from 4 processes and 100 from 4 threads race for a budget that admits 50."""
    store = Store.open(store_url)
    ledger = Ledger(store)
    _admitting_fifty(ledger)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_charge_many, args=(store_url, 25, results)) for _ in range(4)]
    for process in processes:
        process.start()

    admitted = threading.Lock()
    thread_ok = [0]

    def one_charge(_: int) -> None:
        try:
            ledger.charge("tenant", "data", [STEP], "count")
        except BudgetExceededError:
            return
        with admitted:
            thread_ok[0] += 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one_charge, range(100)))
    process_ok = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert thread_ok[0] + sum(process_ok) == 50
    with store.transaction() as session:
        assert session.query(ChargeRecord).count() == 50
    status = ledger.status("tenant", "data")
    assert status.charges == 50 and status.spent is not None and status.remaining_epsilon >= 0
    store.close()
