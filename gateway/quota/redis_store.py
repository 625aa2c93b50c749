"""Quota state in Redis: one Lua script admits (all buckets and the lease, atomically),
one settles (ends the lease, refunds unused tokens). One round trip each.

Keys of one tenant share a hash tag ({tenant}) so they live on one Redis Cluster slot.
Times come from the Redis server (`TIME`) so that all gateway replicas agree; tests may
pass `now_ms` instead. Levels travel as '%.17g' strings: Lua numbers would be truncated
to integers on the way out, and `tostring` keeps only 14 digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.quota.buckets import BucketState, Decision, Limit
from gateway.redis_conn import within

# Both scripts take ARGV[1] = now in ms, or -1 for the Redis server's clock.
NOW_LUA = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1] lease zset, KEYS[2..] buckets.
# ARGV: now_ms (-1: server time), lease_id, lease_ttl_ms, max_leases (-1: none),
#       then per bucket: rate_per_ms, burst, cost.
# Returns {admitted, denied_index (0 = leases), wait_ms (-1: never), in_flight, levels...}.
ADMIT_LUA = (
    NOW_LUA
    + """
local lease_ttl = tonumber(ARGV[3])
local max_leases = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local in_flight = redis.call('ZCARD', KEYS[1])
local n = #KEYS - 1
local levels, rates, bursts, costs = {}, {}, {}, {}
for i = 1, n do
  local base = 4 + 3 * (i - 1)
  rates[i] = tonumber(ARGV[base + 1])
  bursts[i] = tonumber(ARGV[base + 2])
  costs[i] = tonumber(ARGV[base + 3])
  local st = redis.call('HMGET', KEYS[i + 1], 'l', 't')
  local level = bursts[i]
  if st[1] then
    local elapsed = math.max(0, now - tonumber(st[2]))
    level = math.min(bursts[i], tonumber(st[1]) + elapsed * rates[i])
  end
  levels[i] = level
end
local function reply(admitted, index, wait, flight)
  local out = {admitted, index, wait, flight}
  for i = 1, n do out[4 + i] = string.format('%.17g', levels[i]) end
  return out
end
if max_leases >= 0 and in_flight >= max_leases then
  return reply(0, 0, 1000, in_flight)
end
for i = 1, n do
  if levels[i] < costs[i] then
    local wait = -1
    if costs[i] <= bursts[i] and rates[i] > 0 then
      wait = math.ceil((costs[i] - levels[i]) / rates[i])
    end
    return reply(0, i, wait, in_flight)
  end
end
for i = 1, n do
  levels[i] = levels[i] - costs[i]
  redis.call('HSET', KEYS[i + 1], 'l', string.format('%.17g', levels[i]), 't', now)
  local to_full = 0
  if rates[i] > 0 then to_full = math.ceil((bursts[i] - levels[i]) / rates[i]) end
  redis.call('PEXPIRE', KEYS[i + 1], to_full + 60000)
end
redis.call('ZADD', KEYS[1], now + lease_ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease_ttl + 60000)
return reply(1, -1, 0, in_flight + 1)
"""
)

# KEYS[1] lease zset, KEYS[2..] buckets. ARGV: now_ms, lease_id, per bucket: rate, burst, refund.
# Refunds only if the lease was still live (an expired lease was already given up).
SETTLE_LUA = (
    NOW_LUA
    + """
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
for i = 1, #KEYS - 1 do
  local base = 2 + 3 * (i - 1)
  local rate = tonumber(ARGV[base + 1])
  local burst = tonumber(ARGV[base + 2])
  local refund = tonumber(ARGV[base + 3])
  if refund > 0 then
    local st = redis.call('HMGET', KEYS[i + 1], 'l', 't')
    local level = burst
    if st[1] then
      level = math.min(burst, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate)
    end
    level = math.min(burst, level + refund)
    redis.call('HSET', KEYS[i + 1], 'l', string.format('%.17g', level), 't', now)
  end
end
return 1
"""
)


class QuotaStoreUnavailable(Exception):
    """Redis did not answer in time or at all."""


@dataclass(frozen=True, slots=True)
class BucketCharge:
    key: str
    limit: Limit
    amount: float


@dataclass(frozen=True, slots=True)
class AdmitResult:
    decision: Decision
    in_flight: int


class RedisQuotaStore:
    def __init__(self, redis: Redis, timeout_s: float):
        self._redis = redis
        self._timeout_s = timeout_s
        self._admit = redis.register_script(ADMIT_LUA)
        self._settle = redis.register_script(SETTLE_LUA)

    async def _call(self, script: Any, keys: list[str], args: list[object]) -> object:
        return await within(script(keys=keys, args=args), self._timeout_s, QuotaStoreUnavailable)

    async def admit(
        self,
        lease_key: str,
        lease_id: str,
        lease_ttl_ms: int,
        max_leases: int | None,
        charges: Sequence[BucketCharge],
        now_ms: int = -1,
    ) -> AdmitResult:
        args: list[object] = [
            now_ms,
            lease_id,
            lease_ttl_ms,
            -1 if max_leases is None else max_leases,
        ]
        for c in charges:
            args += [repr(c.limit.rate_per_ms), repr(c.limit.burst), repr(c.amount)]
        raw = await self._call(self._admit, [lease_key, *(c.key for c in charges)], args)
        assert isinstance(raw, list)
        admitted, index, wait, in_flight = (int(x) for x in raw[:4])
        states = [
            BucketState(c.limit, float(level)) for c, level in zip(charges, raw[4:], strict=True)
        ]
        if admitted:
            return AdmitResult(Decision(True, states), in_flight)
        decision = Decision(
            False,
            states,
            denied_index=None if index == 0 else index - 1,
            retry_after_ms=None if wait < 0 else wait,
        )
        return AdmitResult(decision, in_flight)

    async def settle(
        self, lease_key: str, lease_id: str, refunds: Sequence[BucketCharge], now_ms: int = -1
    ) -> bool:
        args: list[object] = [now_ms, lease_id]
        for r in refunds:
            args += [repr(r.limit.rate_per_ms), repr(r.limit.burst), repr(r.amount)]
        raw = await self._call(self._settle, [lease_key, *(r.key for r in refunds)], args)
        return bool(raw)
