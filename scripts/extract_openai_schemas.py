"""Extract the OpenAI component schemas raygate validates against into the repository.

OpenAI's OpenAPI document is 3.4 MB; the project keeps only the schemas reachable from
the request and response bodies of the routes it serves, with the document's version
and the date they were taken, so that the tests need nothing outside the checkout.

    python scripts/extract_openai_schemas.py PATH/TO/openai-openapi.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "schemas" / "spec" / "openai-schemas.json"
ROOTS = [
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
]
REF = re.compile(r"#/components/schemas/([A-Za-z0-9_.-]+)")


def reachable(schemas: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The named schemas and every schema they reference, transitively."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += REF.findall(json.dumps(schemas[name]))
    return {name: schemas[name] for name in sorted(seen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="OpenAI's openai-openapi.json")
    parser.add_argument("--source", default="OpenAI's OpenAPI document (openai-openapi.json)")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    document = {
        "source": args.source,
        "openapi_version": spec["info"]["version"],
        "extracted": datetime.date.today().isoformat(),
        "roots": ROOTS,
        "components": {"schemas": reachable(spec["components"]["schemas"], ROOTS)},
    }
    OUT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(document['components']['schemas'])} schemas to {OUT}")


if __name__ == "__main__":
    main()
