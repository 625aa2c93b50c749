"""The drill's client side: a steady mixed load, and a storm of streams that walk away.

Every request the load sends ends as one `Attempt` (what came back, when, from which
model); the storm's streams are deliberate aborts and are not attempts: they are measured
by the leases they leave behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

Kind = Literal["stream", "chat", "embed"]
KINDS: tuple[Kind, ...] = ("stream", "chat", "embed")
Verdict = Literal["ok", "lost", "http_error", "broken"]


@dataclass(frozen=True)
class Tenant:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Attempt:
    """One request of the load. `status` is None when no response came back (`lost`);
    `broken` is a 200 stream that ended without `[DONE]` or with an error event."""

    kind: Kind
    tenant: str
    start: float  # time.monotonic()
    end: float
    verdict: Verdict
    status: int | None = None
    model: str | None = None  # who answered (x-raygate-model)
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@dataclass(frozen=True)
class LoadMix:
    """Per tenant: how many workers of each kind, each starting a request at most every
    `pace_s` (so a failing cluster is not hammered by a tight retry loop)."""

    stream_model: str
    chat_model: str
    embed_model: str
    workers: tuple[tuple[Kind, int], ...] = (("stream", 3), ("chat", 1), ("embed", 1))
    pace_s: float = 0.5
    stream_tokens: int = 32
    chat_tokens: int = 16
    timeout_s: float = 90.0


def _chat_body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def _stream(client: httpx.AsyncClient, mix: LoadMix, tenant: Tenant, n: int) -> Attempt:
    body = _chat_body(mix.stream_model, f"Tell a story about robot {n}.", mix.stream_tokens, True)
    start = time.monotonic()
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=tenant.headers
    ) as response:
        model = response.headers.get("x-raygate-model")
        if response.status_code != 200:
            await response.aread()
            return Attempt(
                "stream", tenant.id, start, time.monotonic(), "http_error",
                response.status_code, model, response.text[:200],
            )  # fmt: skip
        done, error = False, None
        try:
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line:
                    error = _error_message(line[len("data: ") :])
        except httpx.HTTPError as exc:  # the connection broke after the 200
            return Attempt(
                "stream", tenant.id, start, time.monotonic(), "broken", 200, model, repr(exc)
            )
    verdict: Verdict = "ok" if done and error is None else "broken"
    detail = error if error is not None else (None if done else "ended without [DONE]")
    return Attempt("stream", tenant.id, start, time.monotonic(), verdict, 200, model, detail)


def _error_message(event: str) -> str:
    try:
        return str(json.loads(event)["error"].get("message"))
    except (ValueError, KeyError, AttributeError):
        return event[:200]


async def _collected(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], kind: Kind, tenant: Tenant
) -> Attempt:
    start = time.monotonic()
    response = await client.post(path, json=body, headers=tenant.headers)
    verdict: Verdict = "ok" if response.status_code == 200 else "http_error"
    return Attempt(
        kind, tenant.id, start, time.monotonic(), verdict, response.status_code,
        response.headers.get("x-raygate-model"),
        None if verdict == "ok" else response.text[:200],
    )  # fmt: skip


def _request(
    kind: Kind, client: httpx.AsyncClient, mix: LoadMix, tenant: Tenant, n: int
) -> Awaitable[Attempt]:
    if kind == "stream":
        return _stream(client, mix, tenant, n)
    if kind == "chat":
        body = _chat_body(mix.chat_model, f"Name a colour, {n}.", mix.chat_tokens, False)
        return _collected(client, "/v1/chat/completions", body, kind, tenant)
    body = {"model": mix.embed_model, "input": [f"chaos drill sentence {n}", "another one"]}
    return _collected(client, "/v1/embeddings", body, kind, tenant)


async def attempt(
    kind: Kind, client: httpx.AsyncClient, mix: LoadMix, tenant: Tenant, n: int
) -> Attempt:
    """One request of `kind`; never raises: a transport failure is a `lost` attempt."""
    start = time.monotonic()
    try:
        return await _request(kind, client, mix, tenant, n)
    except (httpx.HTTPError, OSError) as exc:  # no status line came back
        return Attempt(kind, tenant.id, start, time.monotonic(), "lost", detail=repr(exc))


class MixedLoad:
    """The steady load: `mix.workers` per tenant, until `stop` is set. `attempts` grows as
    requests end; `in_flight` counts those not yet ended."""

    def __init__(self, base_url: str, tenants: list[Tenant], mix: LoadMix) -> None:
        self._base_url = base_url
        self._tenants = tenants
        self._mix = mix
        self.attempts: list[Attempt] = []
        self.in_flight = 0
        self._counter = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Returns when `stop` is set and every request started has ended."""
        workers = sum(n for _, n in self._mix.workers) * len(self._tenants)
        limits = httpx.Limits(max_connections=workers + 8)
        timeout = httpx.Timeout(self._mix.timeout_s, connect=10)
        async with httpx.AsyncClient(
            base_url=self._base_url, timeout=timeout, limits=limits
        ) as client:
            await asyncio.gather(
                *(
                    self._worker(client, kind, tenant, stop)
                    for tenant in self._tenants
                    for kind, n in self._mix.workers
                    for _ in range(n)
                )
            )

    async def _worker(
        self, client: httpx.AsyncClient, kind: Kind, tenant: Tenant, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self._counter += 1
            self.in_flight += 1
            try:
                self.attempts.append(await attempt(kind, client, self._mix, tenant, self._counter))
            finally:
                self.in_flight -= 1
            pause = self._mix.pace_s - (time.monotonic() - started)
            if pause > 0:
                try:  # pacing the load; wakes at once when the phase stops
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass


def _raw_request(base_url: str, tenant: Tenant, body: dict[str, Any]) -> bytes:
    host = urlsplit(base_url).netloc
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {tenant.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


async def _leave_before_first_byte(
    base_url: str, tenant: Tenant, body: dict[str, Any], linger_s: float
) -> None:
    """Send the request on a raw socket and close it after `linger_s` without reading."""
    url = urlsplit(base_url)
    _, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(_raw_request(base_url, tenant, body))
    await writer.drain()
    await asyncio.sleep(linger_s)  # the client's own think time before it gives up
    writer.close()
    await writer.wait_closed()


async def _leave_mid_stream(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> str:
    """Read the stream up to its first content chunk, then close the connection."""
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=tenant.headers
    ) as response:
        if response.status_code != 200:
            return f"status {response.status_code}"
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return "left mid-stream"
    return "ended before its first token"


async def walk_away(
    base_url: str, tenants: list[Tenant], model: str, streams: int, seed: int = 7
) -> dict[str, int]:
    """`streams` streamed chats opened at once, half closed before the first response byte
    (after 0-300 ms), half after their first token. Returns how each one went."""
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            tenant = tenants[i % len(tenants)]
            body = _chat_body(model, f"Describe city number {i}.", 256, True)
            try:
                if i % 2 == 0:
                    await _leave_before_first_byte(base_url, tenant, body, rng.uniform(0, 0.3))
                    outcome = "left before the first byte"
                else:
                    outcome = await _leave_mid_stream(client, tenant, body)
            except (OSError, httpx.HTTPError) as exc:
                outcome = f"client error {type(exc).__name__}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        await asyncio.gather(*(one(i) for i in range(streams)))
    return outcomes
