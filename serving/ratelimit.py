"""Per-key rate limits: a token bucket of ``per_minute`` tokens refilled continuously.

In-process by default; with ``BASIRA_REDIS_URL`` the buckets live in Redis so every service
process behind a load balancer shares them.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from serving.errors import RateLimitedError

__all__ = ["MemoryRateLimiter", "RateLimiter", "RedisRateLimiter", "make_rate_limiter"]


class RateLimiter(Protocol):
    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimitedError`."""


class MemoryRateLimiter:
    """Token buckets in this process."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise _limited((1.0 - tokens) / self.rate_per_s)
            self._buckets[key] = (tokens - 1.0, now)


# KEYS[1]: bucket; ARGV: capacity, rate per second, now (s). Returns wait seconds (0: allowed).
_REDIS_BUCKET = """
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local cap, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + (now - at) * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 't', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 1)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis, updated atomically by a Lua script."""

    def __init__(self, url: str, per_minute: int) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._script = self.client.register_script(_REDIS_BUCKET)

    def hit(self, key: str) -> None:
        wait = float(
            self._script(
                keys=[f"basira:ratelimit:{key}"],
                args=[self.capacity, self.rate_per_s, time.time()],
            )
        )
        if wait > 0:
            raise _limited(wait)


def make_rate_limiter(per_minute: int, redis_url: str = "") -> RateLimiter:
    return RedisRateLimiter(redis_url, per_minute) if redis_url else MemoryRateLimiter(per_minute)


def _limited(wait_s: float) -> RateLimitedError:
    retry = max(1, int(wait_s + 0.999))
    return RateLimitedError(
        f"Too many requests with this key; retry in {retry} s.", retry_after_s=retry
    )
