"""Rate limits and query budgets, in process and through the machine's Redis."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from privet.serve.limits import Limiter, LimitExceededError, Limits, LocalLimiter, RedisLimiter

REDIS_URL = "redis://127.0.0.1:6379/15"


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Limiter:
    if request.param == "redis":
        if not _redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        return RedisLimiter(REDIS_URL)
    return LocalLimiter()


def test_the_rate_allows_a_burst_then_refuses_and_refills(limiter: Limiter) -> None:
    key, limits = f"k{uuid.uuid4().hex}", Limits(rate=20.0, burst=5)
    for _ in range(5):
        limiter.take(key, limits, None)
    with pytest.raises(LimitExceededError) as refused:
        limiter.take(key, limits, None)
    assert refused.value.code == "rate_limited" and 0 < refused.value.retry_after <= 0.05 + 1e-6
    time.sleep(0.12)  # 20 per second: two tokens back
    limiter.take(key, limits, None)
    limiter.take(key, limits, None)
    with pytest.raises(LimitExceededError):
        limiter.take(key, limits, None)


def test_the_query_budget_counts_per_model_and_window(limiter: Limiter) -> None:
    key, limits = f"k{uuid.uuid4().hex}", Limits(budget_queries=3, budget_window=3600)
    for _ in range(3):
        limiter.take(key, limits, "model-a")
    with pytest.raises(LimitExceededError) as refused:
        limiter.take(key, limits, "model-a")
    assert refused.value.code == "query_budget_exhausted" and 0 < refused.value.retry_after <= 3600
    limiter.take(key, limits, "model-b")  # another model has its own budget
    limiter.take(key, limits, None)  # a request that queries no model spends no budget
    limiter.take(f"k{uuid.uuid4().hex}", limits, "model-a")  # and another key its own


def test_a_refused_request_spends_no_budget() -> None:
    limiter, key = LocalLimiter(), "k"
    limits = Limits(rate=1000.0, burst=1, budget_queries=2, budget_window=3600)
    limiter.take(key, limits, "m")
    with pytest.raises(LimitExceededError, match="rate"):
        limiter.take(key, limits, "m")
    time.sleep(0.01)
    limiter.take(key, limits, "m")  # the refused call above did not count against the budget of 2
