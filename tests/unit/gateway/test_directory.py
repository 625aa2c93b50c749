"""ModelDirectory: what a tenant sees listed is what it can retrieve, and nothing else."""

from __future__ import annotations

import pytest

from gateway.directory import AutoName, ModelDirectory
from gateway.routing.catalog import MayUse
from schemas.errors import ModelNotFound

IDS = ["llm", "fast", "embedder"]
ALIASES = {"default": "llm", "quick": "fast", "text-embedding-default": "embedder"}


AUTO = AutoName("auto", "llm")


def directory(auto: AutoName | None = AUTO) -> ModelDirectory:
    return ModelDirectory(IDS, ALIASES, auto, created=1700)


def allowed(*ids: str) -> MayUse:
    return lambda model_id: "*" in ids or model_id in ids


@pytest.mark.parametrize("may", [("*",), ("llm",), ("fast", "embedder"), ()])
def test_every_listed_card_is_retrieved_as_listed(may: tuple[str, ...]) -> None:
    d = directory()
    for card in d.cards(allowed(*may)):
        assert d.card(card.id, allowed(*may)) == card


def test_aliases_retrieve_their_models_card_and_auto_its_own() -> None:
    d = directory()
    everyone = allowed("*")
    assert d.card("quick", everyone) == d.card("fast", everyone)
    assert d.card("quick", everyone).id == "fast"
    assert d.card("auto", everyone).model_dump() == {
        "id": "auto",
        "object": "model",
        "created": 1700,
        "owned_by": "raygate",
    }
    assert [c.id for c in d.cards(everyone)] == [*IDS, "auto"]


@pytest.mark.parametrize("name", ["nope", "fast", "quick", "auto", "text-embedding-default"])
def test_what_the_tenant_may_not_use_is_not_found(name: str) -> None:
    only_llm_alias_target = allowed("default")  # an alias is not a model id: allows nothing
    with pytest.raises(ModelNotFound) as raised:
        directory().card(name, only_llm_alias_target)
    assert raised.value.param == "model" and raised.value.code == "model_not_found"


def test_auto_follows_its_default_model_and_is_absent_without_a_policy() -> None:
    assert [c.id for c in directory().cards(allowed("fast"))] == ["fast"]
    assert [c.id for c in directory(None).cards(allowed("*"))] == IDS
    with pytest.raises(ModelNotFound):
        directory(None).card("auto", allowed("*"))


def test_an_alias_of_an_unknown_model_fails_at_start() -> None:
    with pytest.raises(ValueError, match="unknown models"):
        ModelDirectory(IDS, {"x": "missing"}, None, created=0)
