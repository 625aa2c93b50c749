"""The model catalogue of one kind of model (LLMs, embedders, rerankers): which model a
name (an id or an alias) means, and whether the caller may use it.

A plain in-process object of the gateway (one handle hop less than a router
deployment); its targets are Serve handles in the app and fakes in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from schemas.errors import ModelNotFound

T = TypeVar("T")


@dataclass(frozen=True)
class Route(Generic[T]):
    model_id: str
    target: T


MayUse = Callable[[str], bool]  # the tenant may use this model id


class ModelCatalog(Generic[T]):
    def __init__(self, targets: Mapping[str, T], aliases: Mapping[str, str] | None = None):
        aliases = dict(aliases or {})
        clashes = set(aliases) & set(targets)
        if clashes:
            raise ValueError(f"aliases shadow model ids: {sorted(clashes)}")
        unknown = {a: m for a, m in aliases.items() if m not in targets}
        if unknown:
            raise ValueError(f"aliases point at unknown models: {unknown}")
        self._targets = dict(targets)
        self._aliases = aliases

    def resolve(
        self, name: str, may_use: MayUse = lambda _: True, shown_as: str | None = None
    ) -> Route[T]:
        """The model `name` means. Raises ModelNotFound (404, naming `shown_as` or `name`)
        for an unknown name and, alike, for a model the caller may not use (its
        existence is not revealed)."""
        model_id = self._aliases.get(name, name)
        target = self._targets.get(model_id)
        if target is None or not may_use(model_id):
            raise ModelNotFound(shown_as or name)
        return Route(model_id, target)

    def model_ids(self) -> Iterable[str]:
        return self._targets.keys()

    def targets(self) -> Mapping[str, T]:
        return self._targets
