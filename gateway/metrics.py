"""The gateway's Prometheus metrics, all declared here and prefixed `raygate_gateway_`.

One `GatewayMetrics` per gateway replica, made in the replica and handed to whatever
records (the request middleware, the timing layer, quota, cache, routing). Exported
through Ray's metrics agent (each node's --metrics-export-port). Label values are
bounded: tenants and route classes come from config, decisions from a fixed set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from ray.serve.metrics import Counter, Gauge, Histogram

from gateway.cache.service import CacheMetrics
from gateway.routing.breaker import STATE_VALUE, State
from gateway.routing.fallback import ChainEvents
from schemas.generation import GenerationRequest

PREFIX = "raygate_gateway_"
LATENCY_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
TTFT_S = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]
STAGE_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
TPOT_S = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]


class RequestMetrics:
    def __init__(self) -> None:
        def tags(*keys: str) -> Any:
            return cast(Any, keys)  # the stub says tuple[str]

        self.requests = Counter(
            PREFIX + "requests_total",
            description="HTTP requests by tenant, model, route and status code.",
            tag_keys=tags("tenant", "model", "route", "status"),
        )
        self.errors = Counter(
            PREFIX + "errors_total",
            description="Failed requests by status and error code or type; mid-stream "
            "failures included (status 200: it was sent before they failed).",
            tag_keys=tags("tenant", "model", "route", "status", "type"),
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            description="Time from request to the last byte of the response.",
            boundaries=LATENCY_S,
            tag_keys=tags("model", "route"),
        )
        self.in_flight = Gauge(
            PREFIX + "requests_in_flight",
            description="Requests this gateway replica is serving now.",
            tag_keys=tags(
                "route",
            ),
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            description="From sending a generation to the model to its first token, by "
            "the model that answered (cache hits excluded).",
            boundaries=TTFT_S,
            tag_keys=tags(
                "model",
            ),
        )
        self.tpot = Histogram(
            PREFIX + "time_per_output_token_seconds",
            description="Mean time between output tokens after the first, per request.",
            boundaries=TPOT_S,
            tag_keys=tags(
                "model",
            ),
        )
        self.tokens = Counter(
            PREFIX + "tokens_total",
            description="Tokens by tenant, model and kind (prompt, completion); cache "
            "hits included.",
            tag_keys=tags("tenant", "model", "kind"),
        )
        self.stages = Histogram(
            PREFIX + "stage_seconds",
            description="Time of each stage of a request before its response starts, by "
            "stage (the Server-Timing header's names, gateway.timing) and model.",
            boundaries=STAGE_S,
            tag_keys=tags("stage", "model"),
        )
        self._in_flight: dict[str, int] = {}

    def started(self, route: str) -> None:
        self._in_flight[route] = self._in_flight.get(route, 0) + 1
        self.in_flight.set(self._in_flight[route], tags={"route": route})

    def finished(
        self,
        route: str,
        status: int,
        tenant: str,
        model: str,
        error: str | None,
        seconds: float,
    ) -> None:
        self._in_flight[route] -= 1
        self.in_flight.set(self._in_flight[route], tags={"route": route})
        who = {
            "tenant": tenant,
            "model": model,
            "route": route,
            "status": str(status),
        }
        self.requests.inc(tags=who)
        self.duration.observe(seconds, tags={"model": model, "route": route})
        if error is not None:
            self.errors.inc(tags={**who, "type": error})

    def observe_stages(self, model: str, stages: Iterable[tuple[str, float]]) -> None:
        for stage, seconds in stages:
            self.stages.observe(seconds, tags={"stage": stage, "model": model})

    def count_tokens(self, tenant: str, model: str, prompt: int, completion: int) -> None:
        for kind, count in (("prompt", prompt), ("completion", completion)):
            if count:
                self.tokens.inc(count, tags={"tenant": tenant, "model": model, "kind": kind})


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests = RequestMetrics()
        self._quota_decisions = Counter(
            PREFIX + "quota_decisions_total",
            description="Quota decisions by outcome: admitted, limited_<scope>_<kind> "
            "(scope tenant|key, kind requests|tokens|concurrency; _locally while Redis is "
            "down), admitted_locally, admitted_without_redis, rejected_without_redis, "
            "settle_failed, ghost_settled.",
            tag_keys=cast(Any, ("tenant", "route_class", "decision")),  # stub says tuple[str]
        )
        self._cache_lookups = Counter(
            PREFIX + "cache_lookups_total",
            description="Cache lookups by result: hit_exact, hit_semantic, miss, verify "
            "(a semantic candidate the model answers instead, to learn from), "
            "semantic_timeout (a miss whose embedding took over cache.embed_timeout_s: the "
            "semantic tier stepped aside), refresh, bypass, off, uncacheable, unavailable "
            "(Redis down: the cache stepped aside), not_cached (an only-if-cached probe).",
            tag_keys=cast(Any, ("tenant", "result")),
        )
        self._cache_stores = Counter(
            PREFIX + "cache_stores_total",
            description="Complete answers written to the cache: stored, failed.",
            tag_keys=cast(Any, ("tenant", "result")),
        )
        self._cache_rejects = Counter(
            PREFIX + "cache_guard_rejects_total",
            description="Semantic candidates above the floor turned down by a guard.",
            tag_keys=cast(Any, ("tenant", "guard")),
        )
        self._cache_verifications = Counter(
            PREFIX + "cache_verifications_total",
            description="Semantic candidates verified (the model answered; its answer was "
            "compared with the cached one) by outcome: agree, disagree, failed (not counted).",
            tag_keys=cast(Any, ("tenant", "outcome")),
        )
        self._cache_similarity = Histogram(
            PREFIX + "cache_similarity",
            description="Cosine similarity of the nearest semantic candidate.",
            boundaries=[0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99],
        )
        self._cache_entries = Gauge(
            PREFIX + "cache_index_entries",
            description="Entries in this gateway replica's semantic index.",
        )

        self._route_decisions = Counter(
            PREFIX + "router_decisions_total",
            description="Generation requests by how the model was chosen (explicit, alias, "
            "auto) and the model chosen.",
            tag_keys=cast(Any, ("decision", "model")),
        )
        self._route_failures = Counter(
            PREFIX + "router_failures_total",
            description="Models passed over before the first token, by reason: error, "
            "first_token_timeout, overloaded, circuit_open, does_not_fit, empty.",
            tag_keys=cast(Any, ("model", "reason")),
        )
        self._fallbacks = Counter(
            PREFIX + "router_fallbacks_total",
            description="Requests moved on from one model to the next of its chain.",
            tag_keys=cast(Any, ("from_model", "to_model")),
        )
        self._continuations = Counter(
            PREFIX + "router_continuations_total",
            description="Streams whose model failed after the first token, carried on by "
            "the next model of its chain with the same weights.",
            tag_keys=cast(Any, ("from_model", "to_model")),
        )
        self._features = Counter(
            PREFIX + "generation_features_total",
            description="Generation requests by the OpenAI features they use: tools "
            "(tool_choice auto), tools_forced (required or a named function), "
            "structured (a JSON response_format), logprobs, choices (n > 1).",
            tag_keys=cast(Any, ("tenant", "model", "feature")),
        )
        self._breaker_state = Gauge(
            PREFIX + "router_breaker_state",
            description="Circuit breaker of each model in this gateway replica: 0 closed, "
            "1 half-open, 2 open.",
            tag_keys=cast(Any, ("model",)),
        )

    def record_route(self, decision: str, model: str) -> None:
        self._route_decisions.inc(tags={"decision": decision, "model": model})

    def record_features(self, tenant: str, model: str, request: GenerationRequest) -> None:
        for feature in features(request):
            self._features.inc(tags={"tenant": tenant, "model": model, "feature": feature})

    def record_breaker(self, model: str, state: State) -> None:
        self._breaker_state.set(STATE_VALUE[state], tags={"model": model})

    def chain_events(self) -> ChainEvents:
        return ChainEvents(
            failed=lambda model, reason: self._route_failures.inc(
                tags={"model": model, "reason": reason}
            ),
            fallback=lambda from_model, to_model: self._fallbacks.inc(
                tags={"from_model": from_model, "to_model": to_model}
            ),
            continued=lambda from_model, to_model: self._continuations.inc(
                tags={"from_model": from_model, "to_model": to_model}
            ),
        )

    def record_quota_decision(self, tenant: str, route_class: str, decision: str) -> None:
        self._quota_decisions.inc(
            tags={"tenant": tenant, "route_class": route_class, "decision": decision}
        )

    def cache_metrics(self) -> CacheMetrics:
        return CacheMetrics(
            lookup=lambda tenant, result: self._cache_lookups.inc(
                tags={"tenant": tenant, "result": result}
            ),
            store=lambda tenant, result: self._cache_stores.inc(
                tags={"tenant": tenant, "result": result}
            ),
            similarity=self._cache_similarity.observe,
            guard_reject=lambda tenant, guard: self._cache_rejects.inc(
                tags={"tenant": tenant, "guard": guard}
            ),
            entries=self._cache_entries.set,
            verification=lambda tenant, outcome: self._cache_verifications.inc(
                tags={"tenant": tenant, "outcome": outcome}
            ),
        )


def features(request: GenerationRequest) -> list[str]:
    """The metrics' names of the OpenAI features a generation request uses."""
    sampling, tools = request.sampling, request.tools
    named = {
        "tools": tools is not None and tools.parsed and not tools.forced,
        "tools_forced": tools is not None and tools.forced,
        "structured": sampling.json_schema is not None or sampling.json_object,
        "logprobs": sampling.logprobs is not None,
        "choices": sampling.n > 1,
    }
    return [name for name, used in named.items() if used]
