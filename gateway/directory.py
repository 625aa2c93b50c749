"""Which models a tenant sees: the one place that decides what GET /v1/models lists and
what GET /v1/models/{model} retrieves, so the two cannot disagree.

A tenant sees every deployed model (LLMs, fault-injection wrappers, embedders,
rerankers) that its allow-list names, and the `auto` policy's name when it may use the
policy's default model (the route planner resolves `auto` through it). An alias
retrieves the card of the model it names: the card the list shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.routing.catalog import MayUse
from schemas.errors import ModelNotFound
from schemas.openai import ModelCard


@dataclass(frozen=True)
class AutoName:
    """The `auto` policy: the name clients send and the model id its default means."""

    name: str
    default_id: str


class ModelDirectory:
    def __init__(
        self,
        model_ids: Iterable[str],
        aliases: Mapping[str, str],
        auto: AutoName | None,
        created: int,
    ):
        self._ids = list(model_ids)
        self._known = frozenset(self._ids)
        unknown = {a: m for a, m in aliases.items() if m not in self._known}
        if unknown:
            raise ValueError(f"aliases point at unknown models: {unknown}")
        self._aliases = dict(aliases)
        self._auto = auto
        self._created = created

    def cards(self, may_use: MayUse) -> list[ModelCard]:
        """The cards of every model `may_use` allows, in deployment order, then `auto`'s."""
        names = [model_id for model_id in self._ids if may_use(model_id)]
        auto = self._auto
        if auto is not None and may_use(auto.default_id):
            names.append(auto.name)
        return [self._card(name) for name in names]

    def card(self, name: str, may_use: MayUse) -> ModelCard:
        """The card of the model `name` (an id, an alias or `auto`) means. Raises
        ModelNotFound (404, `model_not_found`) for an unknown name and, alike, for a model
        the caller may not use (its existence is not revealed)."""
        auto = self._auto
        if auto is not None and name == auto.name:
            if may_use(auto.default_id):
                return self._card(name)
            raise ModelNotFound(name)
        model_id = self._aliases.get(name, name)
        if model_id not in self._known or not may_use(model_id):
            raise ModelNotFound(name)
        return self._card(model_id)

    def _card(self, name: str) -> ModelCard:
        return ModelCard(id=name, created=self._created)
