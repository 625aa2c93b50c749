"""Request bodies: strict JSON in, a validated wire model out, or a 400 saying why.

Python's `json` module accepts more than JSON: NaN and Infinity, numbers that overflow to
infinity, duplicate keys (the last one wins) and lone UTF-16 surrogates (`"\\ud800"`),
which no tokenizer can encode. It also recurses once per nesting level. Each of these
is refused here, before any model or tokenizer sees the request, with OpenAI's error
body and a `param` where one can be named.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 64  # nesting levels of arrays and objects; JSON schemas of tools need ~20
MAX_TEXT_CHARS = 400_000  # one string, before any tokenizer sees it (~100k tokens)


class _Malformed(ValueError):
    """Raised from inside the decoder's hooks; becomes an InvalidRequest."""


def _no_constant(name: str) -> float:
    raise _Malformed(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Malformed(f"the number {text[:32]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Malformed(f"the key '{key[:64]}' appears twice in one object")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite
)


def _param(path: tuple[str | int, ...]) -> str | None:
    """`("messages", 0, "content")` -> `messages[0].content`."""
    param = ""
    for part in path:
        if isinstance(part, int):
            param += f"[{part}]"
        else:
            param += f".{part}" if param else part
    return param or None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _check_tree(data: Any, max_text_chars: int) -> None:
    """Refuse nesting beyond MAX_DEPTH, strings that are not valid Unicode and strings
    longer than `max_text_chars` (so no tokenizer spends seconds on one).

    Iterative, so a hostile body cannot exhaust the stack here either."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(data, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if len(node) > max_text_chars:
                raise InvalidRequest(
                    f"A string in the request has {len(node)} characters; this server takes "
                    f"at most {max_text_chars} per string.",
                    param=_param(path),
                )
            if not _encodable(node):
                raise InvalidRequest(
                    "The request contains a string with an invalid Unicode surrogate "
                    "(an unpaired \\ud800-\\udfff escape).",
                    param=_param(path),
                )
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"The request body is nested more than {MAX_DEPTH} levels deep.",
                param=_param(path[:1]),
            )
        if isinstance(node, dict):
            for key, value in node.items():
                if not _encodable(key):
                    raise InvalidRequest(
                        "The request contains a key with an invalid Unicode surrogate.",
                        param=_param(path),
                    )
                stack.append((value, depth + 1, (*path, key)))
        else:
            stack.extend((value, depth + 1, (*path, i)) for i, value in enumerate(node))


def parse_json(raw: bytes, max_text_chars: int = MAX_TEXT_CHARS) -> dict[str, Any]:
    """The body as a JSON object; raises InvalidRequest if it is anything else."""
    try:
        text = raw.decode("utf-8")  # strict: encoded surrogates and stray bytes fail here
        data = _DECODER.decode(text)
    except RecursionError:
        raise InvalidRequest(
            f"The request body is nested more than {MAX_DEPTH} levels deep."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and _Malformed too
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    _check_tree(data, max_text_chars)
    return data


def parse_body(raw: bytes, model: type[M], max_text_chars: int = MAX_TEXT_CHARS) -> M:
    """Parse and validate a JSON request body, or raise InvalidRequest saying why."""
    data = parse_json(raw, max_text_chars)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _loc_to_param(first["loc"], data, first["type"] == "missing")
        where = f" at '{param}'" if param else ""
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = f"Invalid request{where}: {first['msg']}"
        raise InvalidRequest(message, param=param) from None


def _loc_to_param(loc: tuple[Any, ...], data: Any, missing: bool) -> str | None:
    """A pydantic error location as a `param`: the parts that index the body (a union's
    branch names, such as `str` or `list[constrained-str]`, index nothing), and the field
    a `missing` error names."""
    kept: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (missing and i == len(loc) - 1 and isinstance(node, dict)):
            continue
        kept.append(part)
    return _param(tuple(kept))
