"""The `auto` model: a tier chosen from the request's size, in microseconds.

Rules are tried in order; the first whose limits hold for both the prompt's length (in
tokens of the default tier's tokenizer) and the requested max_tokens wins. Small
requests go to the fast short-context tier, the rest to the default tier.
"""

from __future__ import annotations

from gateway.routing.config import AutoPolicy


class TierPolicy:
    def __init__(self, config: AutoPolicy):
        self.name = config.name
        self.default = config.default
        self._rules = [(r.max_prompt_tokens, r.max_tokens, r.model) for r in config.rules]

    def choose(self, prompt_tokens: int, max_tokens: int | None) -> str:
        """The model (id or alias) for a request; `max_tokens` None: the client set none."""
        for max_prompt, max_out, model in self._rules:
            if prompt_tokens <= max_prompt and max_tokens is not None and max_tokens <= max_out:
                return model
        return self.default

    def models(self) -> list[str]:
        return [self.default, *(model for _, _, model in self._rules)]
