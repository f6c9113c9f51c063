"""What /openapi.json says: every status a route answers, in the shape it answers.

Routes declare their error answers with `answers(...)`; each is the project's
error shape (`ErrorResponse`), and 429/503 carry their Retry-After header. FastAPI
would otherwise announce its own `{"detail": [...]}` for 422, a shape this API never
sends, even on routes that cannot answer 422 at all. tests/system/test_openapi.py
holds the live API to this document with Schemathesis.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sam2fleet.shared.schemas import ErrorResponse, JobCreate

_MEANING = {
    400: "Malformed request: an empty body, a broken multipart body.",
    401: "No valid API key (only with SAM2FLEET_AUTH_ENABLED).",
    404: "Unknown or expired id, or one that belongs to another key.",
    409: "The job has ended already, or the Idempotency-Key was used with another body.",
    413: "The body or the image is over the size limits.",
    415: "Unsupported content type or image format.",
    422: "Invalid input: the body's schema, the image, or the prompts.",
    429: "Over the key's submit rate.",
    500: "The job failed on its worker: `worker_crashed`, `model_unavailable`, `internal`.",
    503: "`queue_full`, `storage_full`, `no_worker_ready` or `unavailable` (Redis).",
    504: "The job did not finish within the timeout; it was cancelled.",
}

RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can answer these error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": ErrorResponse, "description": _MEANING[status]}
        if status in (429, 503):
            out[status]["headers"] = RETRY_AFTER
    return out


def file_upload(part: str, *raw_types: str, base64_json: bool = False) -> dict[str, Any]:
    """`openapi_extra` of an upload route, whose handler reads its body itself: the
    file as a multipart part named `part`, optionally as JSON `{part: base64}`, or as
    the raw body with one of `raw_types`."""
    binary = {"type": "string", "format": "binary"}
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "required": [part], "properties": {part: binary}}
        }
    }
    if base64_json:
        base64 = {"type": "string", "description": "base64"}
        content["application/json"] = {
            "schema": {"type": "object", "required": [part], "properties": {part: base64}}
        }
    content.update({media_type: {"schema": binary} for media_type in raw_types})
    return {"requestBody": {"required": True, "content": content}}


def build(app: FastAPI) -> dict[str, Any]:
    """The document, made once."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        # The submit handler parses its body itself (JSON or multipart), so FastAPI
        # does not see JobCreate; publish its schema for clients and /docs.
        job_schema = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _drop_fastapi_422(schema, components)
        components.update(job_schema.pop("$defs", {}))
        components["JobCreate"] = job_schema
        app.openapi_schema = schema
    return app.openapi_schema


def _drop_fastapi_422(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """FastAPI adds a 422 of its own shape to every route with parameters; routes that
    can answer 422 declare it with `answers`, so the rest (a path parameter that is
    any string) cannot and must not say so."""
    ref = "#/components/schemas/HTTPValidationError"
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            declared = operation.get("responses", {}).get("422", {})
            if declared.get("content", {}).get("application/json", {}).get("schema") == {
                "$ref": ref
            }:
                del operation["responses"]["422"]
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
