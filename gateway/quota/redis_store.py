"""Quota state in Redis: one Lua script admits (leases and buckets, all or nothing), one
settles (ends the lease, refunds unused tokens), one counts the live gateway replicas.

A request holds a lease (its id in a sorted set scored by expiry) in its tenant's lease set
and, if it came with a key, in its key's; a set with a maximum caps concurrency. Keys of one
tenant share a hash tag ({tenant}) so that they live on one Redis Cluster slot. Times come
from the Redis server (`TIME`) so that all gateway replicas agree; tests may pass `now_ms`.
Levels travel as '%.17g' strings: Lua numbers would be truncated to integers on the way out,
and `tostring` keeps only 14 digits. Calls go through `RoundTrips` (one pipeline per round
trip, health judged from them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.quota.buckets import BucketState, Decision, Limit
from gateway.quota.config import QuotaConfig
from gateway.quota.health import LoopLag, RedisHealth
from gateway.quota.round_trips import QuotaStoreUnavailable, RoundTrips, Script
from gateway.redis_conn import redis_client

__all__ = ["AdmitResult", "BucketCharge", "LeaseSet", "QuotaStoreUnavailable", "RedisQuotaStore"]

# Every script takes ARGV[1] = now in ms, or -1 for the Redis server's clock.
NOW_LUA = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: m lease sets, then n buckets.
# ARGV: now_ms, lease_id, lease_ttl_ms, m, per lease set: max (-1: none),
#       then per bucket: rate_per_ms, burst, cost.
# Returns {admitted, denied lease set (1..m, 0: none), denied bucket (1..n, 0: none),
#          wait_ms (-1: never), levels...}. A bucket that does not refill (rate 0) never
# expires: its key expiring would refill it.
ADMIT_LUA = (
    NOW_LUA
    + """
local lease_ttl = tonumber(ARGV[3])
local m = tonumber(ARGV[4])
local n = #KEYS - m
local levels, rates, bursts, costs = {}, {}, {}, {}
for i = 1, n do
  local base = 4 + m + 3 * (i - 1)
  rates[i] = tonumber(ARGV[base + 1])
  bursts[i] = tonumber(ARGV[base + 2])
  costs[i] = tonumber(ARGV[base + 3])
  local st = redis.call('HMGET', KEYS[m + i], 'l', 't')
  local level = bursts[i]
  if st[1] then
    local elapsed = math.max(0, now - tonumber(st[2]))
    level = math.min(bursts[i], tonumber(st[1]) + elapsed * rates[i])
  end
  levels[i] = level
end
local function reply(admitted, lease, bucket, wait)
  local out = {admitted, lease, bucket, wait}
  for i = 1, n do out[4 + i] = string.format('%.17g', levels[i]) end
  return out
end
for j = 1, m do
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', now)
  local max = tonumber(ARGV[4 + j])
  if max >= 0 and redis.call('ZCARD', KEYS[j]) >= max then
    return reply(0, j, 0, 1000)
  end
end
for i = 1, n do
  if levels[i] < costs[i] then
    local wait = -1
    if costs[i] <= bursts[i] and rates[i] > 0 then
      wait = math.ceil((costs[i] - levels[i]) / rates[i])
    end
    return reply(0, 0, i, wait)
  end
end
for i = 1, n do
  levels[i] = levels[i] - costs[i]
  redis.call('HSET', KEYS[m + i], 'l', string.format('%.17g', levels[i]), 't', now)
  if rates[i] > 0 then
    redis.call('PEXPIRE', KEYS[m + i], math.ceil((bursts[i] - levels[i]) / rates[i]) + 60000)
  else
    redis.call('PERSIST', KEYS[m + i])
  end
end
for j = 1, m do
  redis.call('ZADD', KEYS[j], now + lease_ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[j], lease_ttl + 60000)
end
return reply(1, 0, 0, 0)
"""
)

# KEYS: m lease sets, then buckets. ARGV: now_ms, lease_id, m, per bucket: rate, burst, refund.
# Refunds only if the lease was still live in its first set (an expired lease was already
# given up), so settling one lease twice refunds once.
SETTLE_LUA = (
    NOW_LUA
    + """
local m = tonumber(ARGV[3])
local live = 0
for j = 1, m do live = live + redis.call('ZREM', KEYS[j], ARGV[2]) end
if live == 0 then return 0 end
for i = 1, #KEYS - m do
  local base = 3 + 3 * (i - 1)
  local rate = tonumber(ARGV[base + 1])
  local burst = tonumber(ARGV[base + 2])
  local refund = tonumber(ARGV[base + 3])
  if refund > 0 then
    local st = redis.call('HMGET', KEYS[m + i], 'l', 't')
    local level = burst
    if st[1] then
      level = math.min(burst, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate)
    end
    level = math.min(burst, level + refund)
    redis.call('HSET', KEYS[m + i], 'l', string.format('%.17g', level), 't', now)
  end
end
return 1
"""
)

# KEYS: the lease's sets. ARGV: now_ms, lease_id, lease_ttl_ms. Extends a live lease (a
# settled or expired one stays gone). Returns how many sets held it.
RENEW_LUA = (
    NOW_LUA
    + """
local held = 0
for j = 1, #KEYS do
  local expiry = redis.call('ZSCORE', KEYS[j], ARGV[2])
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', KEYS[j], now + tonumber(ARGV[3]), ARGV[2])
    held = held + 1
    redis.call('PEXPIRE', KEYS[j], tonumber(ARGV[3]) + 60000)
  end
end
return held
"""
)

# KEYS[1] the replica set. ARGV: now_ms, replica id, ttl_ms. Returns the live replicas.
HEARTBEAT_LUA = (
    NOW_LUA
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return redis.call('ZCARD', KEYS[1])
"""
)

REPLICAS_KEY = "rg:q:gateways"


@dataclass(frozen=True, slots=True)
class BucketCharge:
    key: str
    limit: Limit
    amount: float


@dataclass(frozen=True, slots=True)
class LeaseSet:
    """A set of live leases: a tenant's or a key's; `max` caps how many (None: no cap)."""

    key: str
    max: int | None


@dataclass(frozen=True, slots=True)
class AdmitResult:
    decision: Decision
    denied_lease: int | None = None  # which lease set was full (the decision's index is None)


def open_quota_store(config: QuotaConfig, password: str | None = None) -> RedisQuotaStore:
    """The store as the gateway runs it: one pipeline in flight at a time (so a few
    connections); a call may take up to `abandon_s` on the socket, since slowness is
    judged by RedisHealth (net of the event loop's lag), not by a socket deadline."""
    redis = redis_client(config.redis_url, password, config.abandon_s, max_connections=8)
    health = RedisHealth(config.timeout_s, LoopLag(), config.down_after)
    return RedisQuotaStore(RoundTrips(redis, health, config.abandon_s))


class RedisQuotaStore:
    def __init__(self, calls: RoundTrips):
        self._calls = calls
        self._admit = Script(ADMIT_LUA)
        self._settle = Script(SETTLE_LUA)
        self._heartbeat = Script(HEARTBEAT_LUA)
        self._renew = Script(RENEW_LUA)

    @property
    def round_trips(self) -> RoundTrips:
        return self._calls

    async def admit(
        self,
        lease_id: str,
        lease_ttl_ms: int,
        leases: Sequence[LeaseSet],
        charges: Sequence[BucketCharge],
        now_ms: int = -1,
    ) -> AdmitResult:
        """Take every charge and add the lease to every set, or nothing. Raises
        QuotaStoreUnavailable when Redis is judged down or this call's round trip failed
        (the script may have run: settle the lease id later)."""
        args: list[object] = [now_ms, lease_id, lease_ttl_ms, len(leases)]
        args += [-1 if s.max is None else s.max for s in leases]
        for c in charges:
            args += [repr(c.limit.rate_per_ms), repr(c.limit.burst), repr(c.amount)]
        keys = [*(s.key for s in leases), *(c.key for c in charges)]
        raw = await self._calls.call(self._admit, keys, args)
        assert isinstance(raw, list)
        admitted, lease, bucket, wait = (int(x) for x in raw[:4])
        states = [
            BucketState(c.limit, float(level)) for c, level in zip(charges, raw[4:], strict=True)
        ]
        if admitted:
            return AdmitResult(Decision(True, states))
        decision = Decision(
            False,
            states,
            denied_index=bucket - 1 if bucket else None,
            retry_after_ms=None if wait < 0 else wait,
        )
        return AdmitResult(decision, denied_lease=lease - 1 if lease else None)

    async def settle(
        self,
        lease_id: str,
        lease_keys: Sequence[str],
        refunds: Sequence[BucketCharge],
        now_ms: int = -1,
    ) -> bool:
        """End the lease and refund; False if it was not live (expired, or settled before).
        Raises QuotaStoreUnavailable as admit does; settling again is harmless."""
        args: list[object] = [now_ms, lease_id, len(lease_keys)]
        for r in refunds:
            args += [repr(r.limit.rate_per_ms), repr(r.limit.burst), repr(r.amount)]
        raw = await self._calls.call(self._settle, [*lease_keys, *(r.key for r in refunds)], args)
        return bool(raw)

    async def renew(self, lease_id: str, lease_keys: Sequence[str], lease_ttl_ms: int) -> bool:
        """Extend a live lease by `lease_ttl_ms` from now; False if it is not live. Raises
        QuotaStoreUnavailable as admit does."""
        raw = await self._calls.call(self._renew, list(lease_keys), [-1, lease_id, lease_ttl_ms])
        return bool(raw)

    async def heartbeat(self, replica_id: str, ttl_ms: int) -> int:
        """Mark this gateway replica live for `ttl_ms`; returns how many are live."""
        raw = await self._calls.call(self._heartbeat, [REPLICAS_KEY], [-1, replica_id, ttl_ms])
        return int(raw)  # type: ignore[call-overload]
