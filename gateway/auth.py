"""API keys and tenants: who is calling, which models they may use, what limits apply.

Keys are configured as SHA-256 hex digests, or as the name of an environment variable
that holds the key (hashed when the app is built); the gateway only ever holds digests
and never logs a key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from gateway.cache.config import TenantCache
from schemas.errors import AuthenticationFailed
from schemas.strict import Strict


class BucketLimit(Strict):
    """A token bucket: refills `per_minute`, holds at most `burst` (default: per_minute)."""

    per_minute: float = Field(ge=0, description="Refill per minute.")
    burst: float | None = Field(default=None, gt=0, description="Capacity; default per_minute.")

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else self.per_minute

    @model_validator(mode="after")
    def _has_capacity(self) -> BucketLimit:
        if self.capacity <= 0:
            raise ValueError("a limit needs per_minute > 0 or burst > 0")
        return self


class Limits(Strict):
    requests: BucketLimit | None = Field(default=None, description="Requests per minute.")
    tokens: BucketLimit | None = Field(
        default=None, description="Tokens per minute: prompt + completion, or embedding input."
    )
    concurrent_requests: int | None = Field(default=None, ge=1, description="In flight at once.")


class KeyConfig(Strict):
    name: str = Field(min_length=1, description="Shown in logs and metrics instead of the key.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="Key digest.")
    env: str | None = Field(default=None, description="Environment variable holding the key.")
    limits: Limits = Field(default_factory=Limits, description="Per-key limits, on top.")

    @model_validator(mode="after")
    def _one_source(self) -> KeyConfig:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError(f"key '{self.name}': set exactly one of sha256, env")
        return self


class TenantConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Tenant name (a metric label).")
    models: list[str] = Field(default=["*"], description="Model ids allowed; '*' for all.")
    limits: Limits = Field(default_factory=Limits, description="Shared by all the tenant's keys.")
    keys: list[KeyConfig] = Field(default_factory=list)
    cache: TenantCache = Field(
        default_factory=TenantCache,
        description="Response cache: on/off, entry lifetime, shared or per key.",
    )


class TenantsFile(Strict):
    tenants: list[TenantConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TenantsFile:
        ids = [t.id for t in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("tenant ids must be unique")
        for t in self.tenants:
            names = [k.name for k in t.keys]
            if len(set(names)) != len(names):
                raise ValueError(f"tenant '{t.id}': key names must be unique")
        return self


class AuthConfig(Strict):
    enabled: bool = Field(default=True, description="false: every request is `anonymous_tenant`.")
    tenants_file: str = Field(description="YAML file of tenants and keys (see README).")
    anonymous_tenant: str | None = Field(
        default=None, description="The tenant of every request when auth is disabled."
    )

    @model_validator(mode="after")
    def _anonymous_only_when_disabled(self) -> AuthConfig:
        if not self.enabled and not self.anonymous_tenant:
            raise ValueError("auth.enabled: false needs auth.anonymous_tenant")
        return self


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_tenants(path: Path, env: Mapping[str, str] = os.environ) -> TenantsFile:
    """Read and validate the tenants file; keys given by env var are replaced by digests."""
    try:
        tenants = TenantsFile.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"tenants file {path}: {exc}") from None
    resolved = []
    for tenant in tenants.tenants:
        keys = []
        for key in tenant.keys:
            if key.env is not None:
                secret = env.get(key.env)
                if not secret:
                    raise ValueError(
                        f"tenant '{tenant.id}' key '{key.name}': environment variable "
                        f"{key.env} is not set"
                    )
                key = key.model_copy(update={"sha256": key_digest(secret), "env": None})
            keys.append(key)
        resolved.append(tenant.model_copy(update={"keys": keys}))
    return TenantsFile(tenants=resolved)


@dataclass(frozen=True)
class Principal:
    tenant: TenantConfig
    key: KeyConfig | None  # None when auth is disabled

    @property
    def key_name(self) -> str:
        return self.key.name if self.key else "anonymous"

    def may_use(self, model_id: str) -> bool:
        return "*" in self.tenant.models or model_id in self.tenant.models


class KeyRing:
    def __init__(self, tenants: TenantsFile, config: AuthConfig):
        by_id = {t.id: t for t in tenants.tenants}
        self._anonymous: Principal | None = None
        if not config.enabled:
            tenant = by_id.get(config.anonymous_tenant or "")
            if tenant is None:
                raise ValueError(f"anonymous tenant '{config.anonymous_tenant}' is not defined")
            self._anonymous = Principal(tenant, None)
        self._by_digest = {
            key.sha256: Principal(tenant, key)
            for tenant in tenants.tenants
            for key in tenant.keys
            if key.sha256 is not None
        }

    def authenticate(self, authorization: str | None) -> Principal:
        """The tenant and key behind an `Authorization` header (the anonymous tenant when
        auth is off). Raises AuthenticationFailed (401) for a missing, malformed or
        unknown key; compares digests only, so no key is ever held or logged."""
        if self._anonymous is not None:
            return self._anonymous
        if not authorization:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        principal = self._by_digest.get(key_digest(token.strip()))
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return principal
