"""Check a read-API answer against the committed OpenAPI document (schemas/read-api.openapi.json).

A small validator for the JSON Schema keywords that document uses (``$ref``, ``type``, ``properties``,
``required``, ``enum``, lengths, bounds, ``items``): enough to fail when the server answers something the
document does not say, without a JSON Schema dependency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parents[1] / "schemas" / "read-api.openapi.json"
PATH = "/users/{user_id}/recommendations"
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
          "boolean": bool, "null": type(None)}


def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text())


def check_response(status: int, body: bytes, content_type: str = "application/json") -> Any:
    """The decoded body; AssertionError if ``status`` is undocumented or the body breaks its schema."""
    doc = document()
    responses = doc["paths"][PATH]["get"]["responses"]
    assert str(status) in responses, f"status {status} is not in the OpenAPI document"
    content = responses[str(status)]["content"]
    assert content_type in content, f"{content_type} is not documented for {status}"
    value = json.loads(body)
    errors = list(_check(value, content[content_type]["schema"], doc, "$"))
    assert not errors, f"{status} answer breaks the OpenAPI document: {errors[:5]}"
    return value


def _check(value: Any, schema: dict[str, Any], doc: dict[str, Any], at: str):
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        yield from _check(value, doc["components"]["schemas"][name], doc, at)
        return
    kind = schema.get("type")
    if kind is not None:
        wanted = _TYPES[kind]
        if not isinstance(value, wanted) or (isinstance(value, bool) and kind in ("integer", "number")):
            yield f"{at}: {value!r} is not {kind}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{at}: {value!r} not in {schema['enum']}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            yield f"{at}: length {len(value)} out of bounds"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            yield f"{at}: {value} out of bounds"
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            yield f"{at}: {len(value)} items > maxItems"
        for n, item in enumerate(value):
            yield from _check(item, schema.get("items", {}), doc, f"{at}[{n}]")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                yield f"{at}: missing {name}"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _check(value[name], sub, doc, f"{at}.{name}")
