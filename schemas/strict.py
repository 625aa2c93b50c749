"""The strict pydantic base of every configuration model (deployments, gateway, batch).

Unknown keys are errors and validated configs are frozen: a typo in serve_config.yaml
fails at build time, never silently at request time.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
