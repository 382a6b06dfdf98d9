"""What the read API answers, and its OpenAPI document (written by ``python -m schemas.export``).

The API itself lives in stream/read_api.py; its contract lives here, beside the records it returns, so the
OpenAPI document is generated from the same msgspec types the server encodes (a unit test compares it with the
committed file, and the integration test checks the server's answers against it).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from schemas.records import RECOMMENDATION_ITEMS_MAX, Recommendation

PATH = "/users/{user_id}/recommendations"
N_DEFAULT = 10
N_MAX = 100
USER_ID_MAX = 256
COLD_START_EVENT_ID = "cold-start"  # ``event_id`` of a list ranked for a user without any interaction
assert N_MAX <= RECOMMENDATION_ITEMS_MAX


class ApiError(msgspec.Struct, frozen=True):
    """Why a request was not answered with a list."""

    error: Annotated[str, msgspec.Meta(description="What went wrong, for humans.")]


_encoder = msgspec.json.Encoder()


def encode_error(message: str) -> bytes:
    return _encoder.encode(ApiError(message))


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}


def openapi() -> dict[str, Any]:
    """The read API's OpenAPI 3.1 document."""
    (rec_schema, error_schema), components = msgspec.json.schema_components(
        [Recommendation, ApiError], ref_template="#/components/schemas/{name}")
    assert rec_schema == {"$ref": "#/components/schemas/Recommendation"} and error_schema
    retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metarec read API",
            "version": "1",
            "description": (
                "Served by every metarec worker with METAREC_API_ENABLED=true (Faust's web server, "
                "METAREC_WEB_HOST:METAREC_WEB_PORT). A request reaching a worker that does not own the user's "
                "partition is forwarded to the one that does."),
        },
        "paths": {PATH: {"get": {
            "operationId": "getRecommendations",
            "summary": "A user's freshest list: the last one sent (from state), or one ranked now.",
            "description": (
                "The list the user's last interaction produced, cut to `n` after dropping excluded, "
                "unavailable and off-category items; when that leaves fewer than `n`, or the user has no "
                "list yet, the model ranks one now from the user's state (nothing is stored). A user never "
                f"seen gets the cold-start list (`event_id` `{COLD_START_EVENT_ID}`)."),
            "parameters": [
                {"name": "user_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": USER_ID_MAX}},
                {"name": "n", "in": "query", "required": False, "description": "How many items.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": N_MAX, "default": N_DEFAULT}},
                {"name": "exclude", "in": "query", "required": False, "explode": True,
                 "description": "Item ids never to return (repeat the parameter or separate with commas).",
                 "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "category", "in": "query", "required": False, "explode": True,
                 "description": "Only items of these categories (any of them): the model's category features "
                                "and the categories of the items' own events.",
                 "schema": {"type": "array", "items": {"type": "string"}}},
            ],
            "responses": {
                "200": {"description": "The list.",
                        "content": {"application/json": {"schema": rec_schema}}},
                "400": _error("A parameter is malformed."),
                "401": {**_error("METAREC_API_TOKEN is set and the request lacks `Authorization: Bearer` "
                                 "with it."),
                        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
                "404": _error("The user was deleted (and has not come back with a new event)."),
                "500": _error("An internal error (the worker logs it)."),
                "503": {**_error("Partitions are being assigned or moving, or the model did not answer in "
                                 "time: retry."), "headers": retry},
            },
        }}},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Only when METAREC_API_TOKEN is set."}},
        },
        "security": [{}, {"bearer": []}],
    }
