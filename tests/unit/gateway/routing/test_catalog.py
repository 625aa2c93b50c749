import pytest

from gateway.routing.catalog import ModelCatalog
from schemas.errors import ModelNotFound


def test_resolves_ids_and_aliases_to_the_canonical_model() -> None:
    router = ModelCatalog({"small": 1, "large": 2}, {"default": "large", "fast": "small"})
    assert router.resolve("large").target == 2
    route = router.resolve("default")
    assert (route.model_id, route.target) == ("large", 2)
    assert router.resolve("fast").model_id == "small"


def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as err:
        ModelCatalog({"small": 1}).resolve("gpt-4o")
    assert err.value.status == 404 and err.value.code == "model_not_found"
    assert "gpt-4o" in err.value.message


@pytest.mark.parametrize(
    "aliases", [{"small": "small"}, {"fast": "missing"}], ids=["shadows-id", "dangling"]
)
def test_inconsistent_aliases_are_rejected_at_start(aliases: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ModelCatalog({"small": 1}, aliases)
