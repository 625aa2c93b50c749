from pathlib import Path

import pytest

from gateway.auth import AuthConfig, KeyRing, key_digest, load_tenants
from schemas.errors import AuthenticationFailed

TENANTS = """
tenants:
  - id: alpha
    models: [small]
    keys:
      - name: ci
        sha256: {digest}
      - name: prod
        env: ALPHA_PROD_KEY
  - id: beta
    keys: []
"""


def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(digest=key_digest("sk-ci")))
    return path


def ring(tmp_path: Path, **auth: object) -> KeyRing:
    tenants = load_tenants(tenants_file(tmp_path), env={"ALPHA_PROD_KEY": "sk-prod"})
    return KeyRing(tenants, AuthConfig(tenants_file="x", **auth))  # type: ignore[arg-type]


def test_keys_map_to_tenants_by_digest(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    ci = keys.authenticate("Bearer sk-ci")
    assert (ci.tenant.id, ci.key_name) == ("alpha", "ci")
    prod = keys.authenticate("bearer  sk-prod ")
    assert prod.key_name == "prod" and prod.key is not None
    assert prod.key.sha256 == key_digest("sk-prod") and prod.key.env is None
    assert ci.may_use("small") and not ci.may_use("large")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic sk-ci", "Bearer sk-nope"])
def test_missing_or_unknown_keys_are_401_without_echoing_the_key(
    tmp_path: Path, header: str | None
) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        ring(tmp_path).authenticate(header)
    assert err.value.status == 401 and err.value.code == "invalid_api_key"
    assert "sk-" not in err.value.message


def test_disabled_auth_needs_an_explicit_anonymous_tenant(tmp_path: Path) -> None:
    anonymous = ring(tmp_path, enabled=False, anonymous_tenant="beta").authenticate(None)
    assert anonymous.tenant.id == "beta" and anonymous.key is None
    assert anonymous.may_use("anything")
    with pytest.raises(ValueError, match="anonymous_tenant"):
        AuthConfig(tenants_file="x", enabled=False)
    with pytest.raises(ValueError, match="not defined"):
        ring(tmp_path, enabled=False, anonymous_tenant="gamma")


def test_missing_secret_env_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ALPHA_PROD_KEY is not set"):
        load_tenants(tenants_file(tmp_path), env={})


def test_bad_tenants_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("tenants:\n  - id: a\n    keys: [{name: k}]\n")
    with pytest.raises(ValueError, match="exactly one of sha256, env"):
        load_tenants(path, env={})
