"""Tool calls read out of a model's answer by vLLM's own parsers.

A model configured with `tool_parser` (vLLM's --tool-call-parser names) gets vLLM's
unified `Parser` for that name, exactly as vLLM's OpenAI server composes it: for
`tool_choice` "auto" it finds the model's tool-call markup (Hermes' <tool_call> tags,
Llama's JSON, ...); for "required" and a named function it constrains decoding to the
tools' JSON schemas (vLLM's structured outputs) and reads the calls out of that JSON.
One `ToolCallReader` per answer (choice) holds the parser's streaming state.
"""

from __future__ import annotations

from typing import Any, cast

from schemas.errors import InvalidRequest
from schemas.generation import FinishReason, SamplingOptions, ToolCallPart, Tools


class ToolParsing:
    """A model's tool parser, and what one request with tools asks of it."""

    def __init__(
        self, parser_name: str, tokenizer: Any, model_id: str, strict_level: str = "parameter"
    ):
        from vllm.parser.parser_manager import ParserManager

        parser_cls = ParserManager.get_parser(
            tool_parser_name=parser_name,
            enable_auto_tools=True,
            model_name=model_id,
            tool_strict_level=strict_level,
            tokenizer=tokenizer,
        )
        if parser_cls is None:
            raise ValueError(f"vLLM has no tool parser '{parser_name}'")
        self._parser_cls = parser_cls
        self._tokenizer = tokenizer
        self._model_id = model_id

    def request(self, tools: Tools, options: SamplingOptions | None = None) -> ToolRequest:
        """vLLM's view of the request's tools, adjusted by the parser: the constraint the
        answer is decoded under (forced calls; under "auto", calls or else the response
        format of `options`, merged as vLLM merges them). Raises InvalidRequest for tools
        vLLM refuses."""
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        try:
            request = ChatCompletionRequest.model_validate(
                {
                    "model": self._model_id,
                    "messages": [{"role": "user", "content": ""}],
                    "tools": tools.tools,
                    "tool_choice": tools.choice,
                    "parallel_tool_calls": tools.parallel,
                    "response_format": _response_format(options),
                }
            )
            probe = self._parser_cls(self._tokenizer, cast(Any, request.tools))
            adjusted: Any = probe.adjust_request(request)
        except (ValidationError, ValueError) as exc:
            raise InvalidRequest(f"tools: {str(exc)[:300]}", param="tools") from None
        return ToolRequest(self, adjusted, tools)

    def parser_for(self, request: Any) -> Any:
        """A fresh vLLM Parser (it keeps one answer's streaming state)."""
        return self._parser_cls(self._tokenizer, request.tools)


class ToolRequest:
    """One request's tools: the engine's constraint and a reader per answer."""

    def __init__(self, parsing: ToolParsing, request: Any, tools: Tools):
        self._parsing = parsing
        self.vllm_request = request  # vLLM's ChatCompletionRequest, as the parser adjusted it
        self.choice = tools.choice

    @property
    def structured(self) -> Any:
        """StructuredOutputsParams the parser asks for (forced tools), or None."""
        return self.vllm_request.structured_outputs

    @property
    def skip_special_tokens(self) -> bool:
        return bool(self.vllm_request.skip_special_tokens)

    def reader(self, prompt_ids: list[int]) -> ToolCallReader:
        return ToolCallReader(self._parsing.parser_for(self.vllm_request), self, prompt_ids)


class ToolCallReader:
    """Splits one answer's streamed text into content and tool-call pieces."""

    def __init__(self, parser: Any, request: ToolRequest, prompt_ids: list[int]):
        self._parser = parser
        self._request = request
        self._prompt_ids: list[int] | None = prompt_ids  # given with the first delta only
        self.called = False

    def read(
        self, text: str, token_ids: list[int], finished: bool
    ) -> tuple[str, tuple[ToolCallPart, ...]]:
        """The content and the tool-call pieces in this delta of the answer."""
        delta = self._parser.parse_delta(
            text, token_ids, self._request.vllm_request, self._prompt_ids, finished=finished
        )
        self._prompt_ids = None
        if delta is None:
            return "", ()
        parts = tuple(_part(call) for call in delta.tool_calls or ())
        self.called = self.called or bool(parts)
        return delta.content or "", parts

    def finish_reason(self, engine_reason: FinishReason) -> FinishReason:
        """OpenAI's: "tool_calls" when tools were called under "auto" or "required"
        (a named function's call ends with "stop"), unless the answer was cut short."""
        choice = self._request.choice
        if engine_reason == "stop" and self.called and choice in ("auto", "required"):
            return "tool_calls"
        return engine_reason


def _response_format(options: SamplingOptions | None) -> dict[str, Any] | None:
    """The request's response format as vLLM's OpenAI request spells it."""
    if options is None:
        return None
    if options.json_schema is not None:
        schema = {"name": "response", "schema": options.json_schema}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"} if options.json_object else None


def _part(call: Any) -> ToolCallPart:
    function = call.function
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    elif function is not None:
        name, arguments = function.name, function.arguments
    else:
        name, arguments = None, None
    return ToolCallPart(call.index, call.id, name, arguments or "")
