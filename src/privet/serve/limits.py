"""Request-rate limits and query budgets per API key, in process or in Redis (several workers or hosts).

- Rate: a token bucket per key (``rate`` tokens a second, ``burst`` at most); a request takes one token.
- Query budget: at most ``budget_queries`` answered queries per key and model in each fixed window of
  ``budget_window`` seconds (windows aligned to the epoch, so every worker agrees which one is current). This
  bounds how much of a model one key can extract or probe for membership, whatever its rate.

In process (the default: one worker), state lives in a dict under a lock and is lost on restart, which hands a
key a fresh window early; with ``redis_url`` the same checks are one atomic Lua script each, shared by every
worker and surviving gateway restarts. A refused request raises :class:`LimitExceededError`, which the gateway
answers with 429 and a ``Retry-After`` header, and records.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from privet.errors import PrivetError

__all__ = ["LimitExceededError", "Limiter", "Limits", "LocalLimiter", "RedisLimiter", "make_limiter"]


@dataclass(frozen=True)
class Limits:
    """A key's request rate and query budget."""

    rate: float | None = None  # requests per second (None: no limit)
    burst: int | None = None  # tokens a bucket holds (default: max(1, rate))
    budget_queries: int | None = None  # queries per model per window (None: no budget)
    budget_window: int = 86_400  # seconds


class LimitExceededError(PrivetError):
    """Over a rate limit or a query budget (HTTP 429)."""

    def __init__(self, message: str, retry_after: float, code: str) -> None:
        super().__init__(message, f"Retry in {math.ceil(retry_after)} s.")
        self.retry_after, self.code = retry_after, code


class Limiter(Protocol):
    def take(self, key_id: str, limits: Limits, model: str | None) -> None:
        """Spend one request (and, with ``model``, one query of its budget), or raise :class:`LimitExceededError`."""


def _burst(limits: Limits) -> float:
    assert limits.rate is not None
    return float(limits.burst if limits.burst is not None else max(1.0, limits.rate))


class LocalLimiter:
    """Buckets and budget windows in this process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._budgets: dict[tuple[str, str], tuple[int, int]] = {}  # (key, model) -> (window, used)
        self._lock = threading.Lock()

    def take(self, key_id: str, limits: Limits, model: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if limits.rate is not None:
                burst = _burst(limits)
                tokens, last = self._buckets.get(key_id, (burst, now))
                tokens = min(burst, tokens + (now - last) * limits.rate)
                if tokens < 1.0:
                    self._buckets[key_id] = (tokens, now)
                    raise LimitExceededError("this key is over its request rate", (1.0 - tokens) / limits.rate,
                                        "rate_limited")  # fmt: skip
            if model is not None and limits.budget_queries is not None:
                window = int(time.time()) // limits.budget_window
                start, used = self._budgets.get((key_id, model), (window, 0))
                used = used if start == window else 0
                if used >= limits.budget_queries:
                    retry = (window + 1) * limits.budget_window - time.time()
                    raise LimitExceededError(f"this key has used its {limits.budget_queries} queries of this model in "
                                        "the current window", retry, "query_budget_exhausted")  # fmt: skip
                self._budgets[(key_id, model)] = (window, used + 1)
            if limits.rate is not None:
                self._buckets[key_id] = (tokens - 1.0, now)


# KEYS: bucket, budget. ARGV: now (s), rate, burst, window index, window seconds, budget (-1: none).
# Returns {0, 0} when taken, {1, wait} when over the rate, {2, wait} when over the budget.
_SCRIPT = """
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, span, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = burst
if rate > 0 then
  local state = redis.call('HMGET', KEYS[1], 't', 'at')
  if state[1] then tokens = math.min(burst, tonumber(state[1]) + (now - tonumber(state[2])) * rate) end
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 't', tokens, 'at', now)
    return {1, tostring((1 - tokens) / rate)}
  end
end
if budget >= 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= budget then return {2, tostring((window + 1) * span - now)} end
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], span + 60)
end
if rate > 0 then
  redis.call('HSET', KEYS[1], 't', tokens - 1, 'at', now)
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
end
return {0, '0'}
"""


class RedisLimiter:
    """The same checks shared through Redis at ``url`` (keys under ``privet:limits:``)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2.0)
        self._script = self._redis.register_script(_SCRIPT)

    def take(self, key_id: str, limits: Limits, model: str | None) -> None:
        if limits.rate is None and (model is None or limits.budget_queries is None):
            return
        now = time.time()
        window = int(now) // limits.budget_window
        budget = limits.budget_queries if model is not None and limits.budget_queries is not None else -1
        rate = limits.rate or 0.0
        keys = [f"privet:limits:rate:{key_id}", f"privet:limits:budget:{key_id}:{model}:{window}"]
        args = [now, rate, _burst(limits) if rate else 1, window, limits.budget_window, budget]
        code, wait = self._script(keys=keys, args=args)
        if int(code) == 1:
            raise LimitExceededError("this key is over its request rate", float(wait), "rate_limited")
        if int(code) == 2:
            raise LimitExceededError(f"this key has used its {limits.budget_queries} queries of this model in the "
                                "current window", float(wait), "query_budget_exhausted")  # fmt: skip


def make_limiter(redis_url: str | None) -> Limiter:
    return RedisLimiter(redis_url) if redis_url else LocalLimiter()
