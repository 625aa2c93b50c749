"""Cache entries in plain Redis (no search module needed): hashes, an exact-key index,
and a stream of entry events that every gateway replica follows to keep its vector index.

    {prefix}:seq           INCR counter: entry ids
    {prefix}:entry:{id}    hash: partition, query, vector (float32 bytes), expires_at,
                           answer (JSON); expires with the entry
    {prefix}:exact:{key}   the id of the newest entry for an exact key; same TTL
    {prefix}:events        stream: op=put or op=del, and the entry's id (nothing else,
                           so every event has the same few dozen bytes whatever the
                           entry's size); trimmed to about `stream_maxlen` events

Storing is one Lua script (one round trip): it writes the entry, points the exact key at
it, deletes the entry it replaces and appends the events. A replica reads a put event's
entry back from its hash (`fetch_entries`), which also skips entries already gone.
Expiry times come from the Redis server's clock so that all replicas agree.

Redis reports entries it expired or evicted on its key-event channels when
`notify-keyspace-events` includes `Exe`; `watch_gone` subscribes to them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.cache.index import IndexedEntry
from gateway.redis_conn import within
from schemas.generation import FinishReason, ToolCallPart

log = logging.getLogger("raygate.cache")

PUT_LUA = """
local t = redis.call('TIME')
local ttl = tonumber(ARGV[2])
local expires_at = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1e6 + ttl)
local id = tostring(redis.call('INCR', KEYS[1]))
local entry = ARGV[1] .. id
redis.call('HSET', entry, 'partition', ARGV[4], 'query', ARGV[5], 'vector', ARGV[6],
           'expires_at', expires_at, 'answer', ARGV[7])
redis.call('EXPIRE', entry, ttl)
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], id, 'EX', ttl)
if old then
  redis.call('DEL', ARGV[1] .. old)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'op', 'del', 'id', old)
end
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'op', 'put', 'id', id)
end
return id
"""

GET_EXACT_LUA = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
local fields = redis.call('HMGET', ARGV[1] .. id, 'partition', 'answer')
if not fields[2] then return false end
return {id, fields[1], fields[2]}
"""


class CacheStoreUnavailable(Exception):
    """Redis did not answer in time or at all."""


@dataclass(frozen=True)
class CachedAnswer:
    """What a hit replays: an answer that stopped by itself, its text and the tool calls
    it made (whole, with their ids), and how it finished ("stop" or "tool_calls")."""

    text: str
    completion_tokens: int
    tool_calls: tuple[ToolCallPart, ...] = ()
    finish_reason: FinishReason = "stop"

    def to_json(self) -> str:
        body: dict[str, object] = {"text": self.text, "completion_tokens": self.completion_tokens}
        if self.tool_calls:
            body["tool_calls"] = [[c.id, c.name, c.arguments] for c in self.tool_calls]
            body["finish_reason"] = self.finish_reason
        return json.dumps(body)

    @staticmethod
    def from_json(raw: bytes | str) -> CachedAnswer:
        data = json.loads(raw)
        calls = tuple(
            ToolCallPart(i, str(id_), str(name), str(arguments))
            for i, (id_, name, arguments) in enumerate(data.get("tool_calls", []))
        )
        reason: FinishReason = "tool_calls" if data.get("finish_reason") == "tool_calls" else "stop"
        return CachedAnswer(str(data["text"]), int(data["completion_tokens"]), calls, reason)


@dataclass(frozen=True)
class EntryEvent:
    op: str  # "put" or "del"
    entry_id: int


@dataclass(frozen=True)
class StoredVector:
    entry: IndexedEntry
    vector: np.ndarray


def _vector(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4")


def _event(fields: dict[bytes, bytes]) -> EntryEvent:
    return EntryEvent(fields[b"op"].decode(), int(fields[b"id"]))


_INDEXED_FIELDS = ["partition", "query", "vector", "expires_at"]


def _stored(entry_id: int, fields: list[bytes | None]) -> StoredVector | None:
    """An entry's indexed fields, or None if it is gone (or exact-only)."""
    part, query, vector, expires = fields
    if part is None or query is None or not vector or expires is None:
        return None
    entry = IndexedEntry(entry_id, part.decode(), query.decode(), float(expires))
    return StoredVector(entry, _vector(vector))


class RedisCacheStore:
    def __init__(self, redis: Redis, timeout_s: float, prefix: str, stream_maxlen: int):
        self._redis: Any = redis  # redis-py's reply types are unions of everything
        self._timeout_s = timeout_s
        self._prefix = prefix
        self._entry_prefix = f"{prefix}:entry:"
        self._seq = f"{prefix}:seq"
        self._events = f"{prefix}:events"
        self._maxlen = stream_maxlen
        self._put = redis.register_script(PUT_LUA)
        self._get_exact = redis.register_script(GET_EXACT_LUA)

    def _exact(self, key: str) -> str:
        return f"{self._prefix}:exact:{key}"

    async def _call(self, awaitable: Any) -> Any:
        return await within(awaitable, self._timeout_s, CacheStoreUnavailable)

    async def put(
        self,
        partition: str,
        exact_key: str,
        query: str | None,
        vector: np.ndarray | None,
        answer: CachedAnswer,
        ttl_s: int,
    ) -> int:
        """Store an answer; it replaces the entry of the same exact key. Returns its id."""
        raw_vector = b"" if vector is None else np.asarray(vector, dtype="<f4").tobytes()
        keys = [self._seq, self._exact(exact_key), self._events]
        args: list[Any] = [self._entry_prefix, ttl_s, self._maxlen, partition, query or ""]
        args += [raw_vector, answer.to_json()]
        return int(await self._call(self._put(keys=keys, args=args)))

    async def get_exact(self, exact_key: str, partition: str) -> tuple[int, CachedAnswer] | None:
        found = await self._call(
            self._get_exact(keys=[self._exact(exact_key)], args=[self._entry_prefix])
        )
        if not found or found[1].decode() != partition:
            return None
        return int(found[0]), CachedAnswer.from_json(found[2])

    async def get(self, entry_id: int, partition: str) -> CachedAnswer | None:
        """The answer of an entry, if it still exists in that partition."""
        stored, answer = await self._call(
            self._redis.hmget(f"{self._entry_prefix}{entry_id}", ["partition", "answer"])
        )
        if stored is None or answer is None or stored.decode() != partition:
            return None
        return CachedAnswer.from_json(answer)

    # ---------------------------------------------------------- verification evidence

    def evidence_key(self, scope: str) -> str:
        """The Redis hash holding a scope's verification counts."""
        return f"{self._prefix}:evidence:{scope}"

    async def evidence(self, scope: str) -> dict[str, int]:
        """The verification counts of a scope (hash field -> count; see verified.py)."""
        counts = await self._call(self._redis.hgetall(self.evidence_key(scope)))
        return {name.decode(): int(value) for name, value in counts.items()}

    async def add_evidence(self, scope: str, field: str, ttl_s: int) -> None:
        """Count one verification outcome; the scope's counts expire `ttl_s` after this."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(self.evidence_key(scope), field, 1)
        pipe.expire(self.evidence_key(scope), ttl_s)
        await self._call(pipe.execute())

    # ----------------------------------------------------------------- replica sync

    async def last_event_id(self) -> str:
        latest = await self._redis.xrevrange(self._events, count=1)
        return latest[0][0].decode() if latest else "0-0"

    async def scan_entries(self, batch: int = 1000) -> AsyncIterator[list[StoredVector]]:
        """Every stored semantic entry, in batches (for a replica's cold start)."""
        cursor = 0
        while True:
            cursor, keys = await self._redis.scan(
                cursor, match=f"{self._entry_prefix}*", count=batch
            )
            if keys:
                pipe = self._redis.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(key, _INDEXED_FIELDS)
                found = [
                    stored
                    for key, fields in zip(keys, await pipe.execute(), strict=True)
                    if (stored := _stored(self._entry_id(key), fields)) is not None
                ]
                if found:
                    yield found
            if cursor == 0:
                return

    async def read_events(
        self, after: str, block_ms: int, count: int = 1000
    ) -> list[tuple[str, EntryEvent]]:
        """Events after `after`, waiting up to block_ms for the first one."""
        reply = await self._redis.xread({self._events: after}, count=count, block=block_ms)
        if not reply:
            return []
        return [(event_id.decode(), _event(fields)) for event_id, fields in reply[0][1]]

    async def fetch_entries(self, entry_ids: list[int]) -> dict[int, StoredVector]:
        """The indexed fields of these entries (one round trip), by id; an entry that is
        gone (expired, evicted, replaced) or exact-only is absent from the result."""
        if not entry_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.hmget(f"{self._entry_prefix}{entry_id}", _INDEXED_FIELDS)
        found = {}
        for entry_id, fields in zip(entry_ids, await pipe.execute(), strict=True):
            stored = _stored(entry_id, fields)
            if stored is not None:
                found[entry_id] = stored
        return found

    def _entry_id(self, key: bytes) -> int:
        return int(key[len(self._entry_prefix) :])

    async def watch_gone(self) -> GoneEntries | None:
        """Subscribe to the entries Redis expires or evicts (its key-event channels),
        turning the events on first if the server allows it. Returns None when Redis
        refuses (CONFIG disabled or not permitted, as on some managed services): the
        caller then relies on its own TTL sweep and on lookups noticing gone entries.
        Raises redis-py's errors if Redis is unreachable."""
        try:
            flags = (await self._redis.config_get("notify-keyspace-events")).get(
                "notify-keyspace-events", ""
            )
            if not _events_on(flags):
                await self._redis.config_set("notify-keyspace-events", _with_events(flags))
        except ResponseError as exc:
            log.warning("cache: expired/evicted key events unavailable (%s)", exc)
            return None
        db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"__keyevent@{db}__:expired", f"__keyevent@{db}__:evicted")
        return GoneEntries(pubsub, self._entry_prefix.encode())


def _events_on(flags: str) -> bool:
    """Whether these notify-keyspace-events flags publish expired and evicted key events."""
    return "E" in flags and ("A" in flags or ("x" in flags and "e" in flags))


def _with_events(flags: str) -> str:
    return flags + "".join(f for f in "Exe" if f not in flags)


class GoneEntries:
    """A subscription to the entries Redis expired or evicted."""

    def __init__(self, pubsub: Any, entry_prefix: bytes):
        self._pubsub = pubsub
        self._entry_prefix = entry_prefix

    async def pending(self, limit: int = 10_000) -> list[int]:
        """Ids of the entries reported gone since the last call, from at most `limit`
        messages (other keys of the database are reported too); never waits. Raises
        redis-py's errors if the subscription's connection is lost."""
        gone: list[int] = []
        for _ in range(limit):
            message = await self._pubsub.get_message(timeout=0)
            if message is None:
                return gone
            key = message["data"]
            if isinstance(key, bytes) and key.startswith(self._entry_prefix):
                entry_id = key[len(self._entry_prefix) :]
                if entry_id.isdigit():
                    gone.append(int(entry_id))
        return gone

    async def close(self) -> None:
        await self._pubsub.aclose()
