"""POST /tokenize and /detokenize without HTTP: vLLM's server routes, over the gateway's
own tokenizers.

A prompt is tokenized by the route planner (`RoutePlanner.encode`) with the model's
PromptEncoder, the one generation requests are counted with, and chat messages become
the streaming contract's messages by the generation path's own conversion: under the
default options the count is the prompt tokens a chat or completion request with the
same input is charged for. Nothing here calls a model deployment but for its context
length (asked once per deployment).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from deployments.prompt import PromptOptions
from gateway.generation.plan import generation_requests
from gateway.routing.catalog import MayUse
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from schemas.generation import GenerationRequest, SamplingOptions
from schemas.openai import ChatCompletionRequest
from schemas.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)


@dataclass(frozen=True)
class PreparedTokens:
    """A tokenize or detokenize call, routed, with its token ids. Nothing is reserved from
    the token buckets (vLLM's server counts none either); admission takes one request."""

    model_id: str
    target: LLMTarget
    ids: list[int]  # the prompt's (tokenize) or the body's (detokenize)
    reserved_tokens: int = 0


def contract_request(body: TokenizeRequest) -> GenerationRequest:
    """The streaming contract's request for the body's messages and tools (by the chat
    path's own conversion, as a chat with the same messages and tools gets) or text prompt."""
    if body.messages is not None:
        chat = ChatCompletionRequest(model=body.model, messages=body.messages, tools=body.tools)
        (request,) = generation_requests(chat, "tokenize")  # a chat has one prompt
        return request
    return GenerationRequest("tokenize", SamplingOptions(), prompt=body.prompt)


def prompt_options(body: TokenizeRequest) -> PromptOptions:
    return PromptOptions(
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        add_special_tokens=body.add_special_tokens,
    )


class TokenizeService:
    def __init__(self, planner: RoutePlanner):
        self._planner = planner

    async def prepare_tokenize(self, body: TokenizeRequest, may_use: MayUse) -> PreparedTokens:
        """Route `body.model` and tokenize the prompt or messages as the planner does for
        generation (for `auto`, for the model it picks). Raises ModelNotFound (404) for a
        name the caller cannot use, InvalidRequest (400, naming `prompt` or `messages`)
        for input the tokenizer or the chat template refuses."""
        encoded = await self._planner.encode(
            body.model, contract_request(body), may_use, prompt_options(body)
        )
        return PreparedTokens(encoded.route.model_id, encoded.route.target, encoded.ids)

    async def tokenize(self, body: TokenizeRequest, prepared: PreparedTokens) -> TokenizeResponse:
        target = prepared.target
        strings = None
        if body.return_token_strs:
            strings = await asyncio.to_thread(target.prompts.token_strings, prepared.ids)
        return TokenizeResponse(
            count=len(prepared.ids),
            max_model_len=await target.backend.max_model_len(),
            tokens=prepared.ids,
            token_strs=strings,
        )

    async def prepare_detokenize(self, body: DetokenizeRequest, may_use: MayUse) -> PreparedTokens:
        """Route `body.model` (an LLM's id, alias, or `auto`: its default model). Raises
        ModelNotFound (404) for a name the caller cannot use."""
        route = self._planner.target(body.model, may_use)
        return PreparedTokens(route.model_id, route.target, list(body.tokens))

    async def detokenize(self, prepared: PreparedTokens) -> DetokenizeResponse:
        """The text of the token ids under the model's tokenizer, special tokens included.
        Raises InvalidRequest (400, `tokens`) for an id outside the vocabulary."""
        text = await asyncio.to_thread(prepared.target.prompts.decode, prepared.ids)
        return DetokenizeResponse(prompt=text)
