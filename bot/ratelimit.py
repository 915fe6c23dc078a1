"""Rate limits in Redis, shared by every worker of every process (docs/rate-limits.md).

Two mechanisms, each one atomic Lua script per check that reads the clock with Redis `TIME`
(never the caller's clock), so all workers on all machines agree:

- `RateLimiter.take`: token buckets. A bucket holds up to `Rate.capacity` tokens and gains
  `Rate.per_s` tokens per second; a check takes `cost` tokens from every bucket it names, or
  from none when one of them is short (then it says how long to wait). A bucket is a Redis hash
  `<p>:rl:<name>` (`tokens`, `ts` in ms) that expires once it would be full again (plus twice
  how far in the past it was evaluated, so a backlog charged as of its arrival times never
  finds a bucket that vanished under it), so idle buckets vanish.
- `RouteBuckets`: buckets a platform announces in its response headers (Discord's
  `X-RateLimit-Bucket`, `-Remaining`, `-Reset-After`): `<p>:rl:<platform>:route:<route>` maps
  a route to the platform's bucket id, `<p>:rl:<platform>:bucket:<bucket>:<major>` holds what
  is left of it until when, and `<p>:rl:<platform>:blocked` blocks every route after a global
  429.

`SendPacer` is what platform senders await before each API call: it waits (sleeping the
retry-after the scripts give, again and again) instead of failing, so a burst of sends is
smoothed to the platform's documented limits instead of bounced with 429s. Pacing fails open:
when Redis cannot be asked, the call goes ahead (the senders still wait out a 429).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import TransientError
from bot.keys import Keys
from bot.log import get_logger
from bot.metrics import REGISTRY
from bot.redis_pool import Coalesced, run_script

log = get_logger("bot.ratelimit")

SEND_WAITS = Counter(
    "switchboard_send_paced", "Platform API calls that waited for their rate-limit bucket.",
    ["platform"], registry=REGISTRY)
SEND_WAIT_SECONDS = Counter(
    "switchboard_send_paced_seconds", "Seconds platform API calls waited for their "
    "rate-limit buckets.", ["platform"], registry=REGISTRY)

#: The longest one platform call waits for its buckets before the send fails (transiently:
#: the message is retried later and its worker serves other conversations meanwhile), seconds.
MAX_PACING_WAIT_S = 60.0

# KEYS: [memo key if ARGV[2] > 0], bucket 1 .. bucket n
# ARGV: cost, memo ttl ms (0: no memo), evaluation time ms (0: now; later than now: now),
#       then capacity and tokens per second of each bucket
# -> {1, 0, 0, ""} taken; {0, wait ms, index of the bucket that waits longest, ""} short;
#    {2, 0, 0, memo value} the memo key exists (nothing taken)
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local first = 1
local memo_ms = tonumber(ARGV[2])
if memo_ms > 0 then
  first = 2
  local seen = redis.call('GET', KEYS[1])
  if seen then return {2, 0, 0, seen} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local real = now
local at = tonumber(ARGV[3])
if at > 0 and at < now then now = at end
-- a bucket evaluated in the past (a backlog) must outlive the backlog: requests even older
-- than this one may still be checked against it
local keep = 1000 + 2 * (real - now)
local cost = tonumber(ARGV[1])
local wait, worst = 0, 0
local levels, stamps = {}, {}
for i = first, #KEYS do
  local j = 4 + 2 * (i - first)
  local cap, rate = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens, ts = tonumber(s[1]), tonumber(s[2])
  if tokens == nil or ts == nil then tokens, ts = cap, now end
  local at_i = math.max(now, ts)
  tokens = math.min(cap, tokens + (at_i - ts) * rate / 1000)
  levels[i], stamps[i] = tokens, at_i
  if tokens < cost then
    local need = math.ceil((cost - tokens) * 1000 / rate)
    if need > wait then wait, worst = need, i - first + 1 end
  end
end
if wait > 0 then
  for i = first, #KEYS do
    local j = 4 + 2 * (i - first)
    local life = math.ceil(tonumber(ARGV[j]) * 1000 / tonumber(ARGV[j + 1])) + keep
    local left = redis.call('PTTL', KEYS[i])
    if left > 0 and left < life then redis.call('PEXPIRE', KEYS[i], life) end
  end
  return {0, wait, worst, ''}
end
for i = first, #KEYS do
  local j = 4 + 2 * (i - first)
  local cap, rate = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - cost), 'ts', stamps[i])
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap * 1000 / rate) + keep)
end
if memo_ms > 0 then redis.call('SET', KEYS[1], 'ok', 'PX', memo_ms) end
return {1, 0, 0, ''}
"""

# KEYS: bucket state (hash remaining, reset ms), the platform-wide block (PX)
# ARGV: "1" when the call is under the platform-wide limit (the block applies to it)
# -> 0: go (one of the bucket's remaining calls reserved); else ms to wait
_ROUTE_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
if ARGV[1] == '1' then
  local blocked = redis.call('PTTL', KEYS[2])
  if blocked > 0 then return blocked end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'remaining', 'reset')
local remaining, reset = tonumber(s[1]), tonumber(s[2])
if remaining == nil or reset == nil or reset <= now then return 0 end
if remaining > 0 then
  redis.call('HINCRBY', KEYS[1], 'remaining', -1)
  return 0
end
return reset - now
"""

# KEYS: bucket state; ARGV: remaining, reset after ms
# Within one window (the same reset, give or take a second) the lower count wins: calls
# reserved by other workers and still in flight are not in the platform's number yet.
_ROUTE_OBSERVE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local remaining = tonumber(ARGV[1])
local after = tonumber(ARGV[2])
local reset = now + after
local s = redis.call('HMGET', KEYS[1], 'remaining', 'reset')
local old, old_reset = tonumber(s[1]), tonumber(s[2])
if old ~= nil and old_reset ~= nil and old_reset > now and math.abs(reset - old_reset) < 1000
    and old < remaining then
  remaining = old
end
redis.call('HSET', KEYS[1], 'remaining', remaining, 'reset', reset)
redis.call('PEXPIRE', KEYS[1], after + 1000)
return remaining
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's shape.

    Attributes:
        capacity: the most tokens it holds (the burst), at least 1.
        per_s: tokens added per second, above 0.
    """

    capacity: float
    per_s: float

    def __post_init__(self) -> None:
        if not (self.capacity >= 1 and self.per_s > 0):
            raise ValueError(f"a rate needs capacity >= 1 and per_s > 0, not {self}")

    @classmethod
    def per_minute(cls, count: float, burst: float) -> Rate:
        """`count` tokens per minute, at most `burst` at once."""
        return cls(capacity=burst, per_s=count / 60.0)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket to take from: `name` (the key under `<p>:rl:`) and its `rate`."""

    name: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of `RateLimiter.take`.

    Attributes:
        allowed: the tokens were taken (or the memo said this was decided before).
        retry_after_s: when not allowed, seconds until every bucket holds enough; else 0.
        blocking: when not allowed, the name of the bucket that waits longest.
        memo: the memo key's value when it existed (nothing was taken then), else None.
    """

    allowed: bool
    retry_after_s: float = 0.0
    blocking: str | None = None
    memo: str | None = None


class RateLimiter:
    """Token buckets in Redis under `<prefix>:rl:`; see the module docstring."""

    def __init__(self, redis: Redis, prefix: str, *, coalesced: Coalesced | None = None
                 ) -> None:
        self.redis = redis
        self.prefix = prefix
        self._keys = Keys(prefix)
        self._take = redis.register_script(_TAKE)
        self._coalesced = coalesced  # the process's shared round trips, for `take`

    def key(self, name: str) -> str:
        """The Redis key of the bucket (or mark) `name`."""
        return self._keys.rate(name)

    async def take(self, buckets: Sequence[Bucket], *, cost: float = 1.0,
                   at: float | None = None, memo: str | None = None,
                   memo_ttl_s: float = 0.0) -> Decision:
        """Take `cost` tokens from every bucket in `buckets`, all or none.

        Args:
            at: evaluate the buckets as of this Unix time in seconds (a message's arrival),
                when it is earlier than Redis' clock; a bucket never goes back in time.
            memo: a name under `<p>:rl:`; when it exists its value is returned and nothing
                is taken, and a successful take sets it to "ok" for `memo_ttl_s`, so the same
                request (a retried message) is never charged twice.

        Raises:
            ValueError: no bucket, or `cost` above a bucket's capacity (it could never pass).
            redis.exceptions.RedisError, OSError: Redis cannot be asked.
        """
        if not buckets:
            raise ValueError("take needs at least one bucket")
        if any(cost > b.rate.capacity for b in buckets) or cost <= 0:
            raise ValueError(f"cost {cost} must be above 0 and within every bucket's capacity")
        keys = [self.key(b.name) for b in buckets]
        memo_ms = math.ceil(memo_ttl_s * 1000) if memo else 0
        if memo_ms:
            keys.insert(0, self.key(str(memo)))
        args: list[str | float | int] = [repr(float(cost)), memo_ms,
                                         int(at * 1000) if at is not None else 0]
        for b in buckets:
            args += [repr(float(b.rate.capacity)), repr(float(b.rate.per_s))]
        status, wait_ms, worst, seen = await run_script(self._take, keys, args, self._coalesced)
        if int(status) == 2:
            return Decision(True, memo=seen.decode() if isinstance(seen, bytes) else str(seen))
        if int(status) == 1:
            return Decision(True)
        return Decision(False, retry_after_s=int(wait_ms) / 1000.0,
                        blocking=buckets[int(worst) - 1].name)


class RouteBuckets:
    """Buckets a platform announces per route in its responses (Discord); see the module
    docstring. `route` is the call's route without its ids (`POST /channels/{id}/messages`),
    `major` the id the platform keys buckets on (a channel, a guild, a hashed webhook)."""

    #: How long a route's bucket id is remembered, seconds.
    ROUTE_TTL_S = 24 * 3600

    def __init__(self, limiter: RateLimiter, platform: str) -> None:
        self._limiter = limiter
        self._platform = platform
        self._acquire = limiter.redis.register_script(_ROUTE_ACQUIRE)
        self._observe = limiter.redis.register_script(_ROUTE_OBSERVE)
        self._routes: dict[str, str] = {}  # route -> bucket id, as learnt in this process

    async def _state_key(self, route: str) -> str:
        bucket = self._routes.get(route)
        if bucket is None:
            raw = await self._limiter.redis.get(self._limiter.key(
                f"{self._platform}:route:{route}"))
            if raw is not None:
                bucket = raw.decode() if isinstance(raw, bytes) else str(raw)
                self._routes[route] = bucket
        return f"{self._platform}:bucket:{bucket or route}"

    async def check(self, route: str, major: str, *, global_limited: bool = True) -> float:
        """Seconds to wait before calling `route` on `major` (0: go now, and one of the
        bucket's remaining calls is reserved); `global_limited` False: the platform-wide
        block after a global 429 does not apply (Discord's interaction endpoints).

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be asked.
        """
        state = await self._state_key(route)
        wait_ms = await self._acquire(keys=[self._limiter.key(f"{state}:{major}"),
                                            self._limiter.key(f"{self._platform}:blocked")],
                                      args=["1" if global_limited else "0"])
        return max(0, int(wait_ms)) / 1000.0

    async def observe(self, route: str, major: str, *, bucket: str | None,
                      remaining: int | None, reset_after_s: float | None,
                      global_retry_after_s: float | None = None) -> None:
        """Record what a response said: the route's `bucket` id, the calls `remaining` in it
        and the seconds until it resets; `global_retry_after_s` (a global 429) blocks every
        route of the platform that long.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be asked.
        """
        redis = self._limiter.redis
        if global_retry_after_s is not None and global_retry_after_s > 0:
            await redis.set(self._limiter.key(f"{self._platform}:blocked"), "1",
                            px=max(1, math.ceil(global_retry_after_s * 1000)))
        if bucket and self._routes.get(route) != bucket:
            self._routes[route] = bucket
            await redis.set(self._limiter.key(f"{self._platform}:route:{route}"), bucket,
                            ex=self.ROUTE_TTL_S)
        if remaining is not None and reset_after_s is not None:
            state = await self._state_key(route)
            await self._observe(keys=[self._limiter.key(f"{state}:{major}")],
                                args=[max(0, remaining), max(1, math.ceil(reset_after_s * 1000))])


class PacingTimeout(TransientError):
    """A platform call would have waited longer than the pacer's `max_wait_s` for its
    buckets; the send fails transiently and the message is retried later."""


class SendPacer:
    """What senders await before each platform API call (see the module docstring).

    Args:
        limiter: the shared token buckets.
        sleep: how to wait, `asyncio.sleep` (tests inject a recording one).
        max_wait_s: the longest one call waits in all, seconds (`PacingTimeout` past it).
    """

    def __init__(self, limiter: RateLimiter, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 max_wait_s: float = MAX_PACING_WAIT_S) -> None:
        self.limiter = limiter
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._routes: dict[str, RouteBuckets] = {}

    def routes(self, platform: str) -> RouteBuckets:
        """The announced (header) buckets of `platform`, one object per platform."""
        if platform not in self._routes:
            self._routes[platform] = RouteBuckets(self.limiter, platform)
        return self._routes[platform]

    async def acquire(self, platform: str, buckets: Sequence[Bucket]) -> float:
        """Wait until one token can be taken from every bucket, and take it.

        Returns: the seconds waited (0.0 when the call could go at once, or Redis failed).
        Raises:
            PacingTimeout: the wait would exceed `max_wait_s`.
        """
        return await self._wait(platform, lambda: self._take(buckets))

    async def acquire_route(self, platform: str, route: str, major: str,
                            buckets: Sequence[Bucket] = (), *,
                            global_limited: bool = True) -> float:
        """Wait for the route's announced bucket (and, when `global_limited`, the
        platform-wide block), then for `buckets` (e.g. a global requests-per-second bucket);
        see `acquire`."""
        routes = self.routes(platform)
        waited = await self._wait(platform, lambda: routes.check(
            route, major, global_limited=global_limited))
        if buckets:
            waited += await self.acquire(platform, buckets)
        return waited

    async def observe_route(self, platform: str, route: str, major: str, *,
                            bucket: str | None, remaining: int | None,
                            reset_after_s: float | None,
                            global_retry_after_s: float | None = None) -> None:
        """`RouteBuckets.observe`, best effort (a Redis failure is logged and ignored)."""
        try:
            await self.routes(platform).observe(
                route, major, bucket=bucket, remaining=remaining, reset_after_s=reset_after_s,
                global_retry_after_s=global_retry_after_s)
        except (RedisError, OSError) as exc:
            log.warning("rate-limit headers not recorded", platform=platform,
                        error=type(exc).__name__)

    async def _take(self, buckets: Sequence[Bucket]) -> float:
        decision = await self.limiter.take(buckets)
        return 0.0 if decision.allowed else decision.retry_after_s

    async def _wait(self, platform: str, check: Callable[[], Awaitable[float]]) -> float:
        waited = 0.0
        while True:
            try:
                wait_s = await check()
            except (RedisError, OSError) as exc:  # fail open: the platform's 429 still counts
                log.warning("send pacing unavailable; sending unpaced", platform=platform,
                            error=type(exc).__name__)
                return waited
            if wait_s <= 0:
                if waited:
                    SEND_WAITS.labels(platform).inc()
                    SEND_WAIT_SECONDS.labels(platform).inc(waited)
                return waited
            if waited + wait_s > self._max_wait_s:
                raise PacingTimeout(f"{platform}: sending would wait {waited + wait_s:.1f} s "
                                    f"for its rate limit (more than {self._max_wait_s:g} s)")
            await self._sleep(wait_s)
            waited += wait_s


@runtime_checkable
class Paced(Protocol):
    """A sender whose platform calls a `SendPacer` can pace (None: unpaced)."""

    pacer: SendPacer | None
