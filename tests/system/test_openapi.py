"""The OpenAPI document tells the truth: Schemathesis, a fuzzer nobody here wrote,
generates requests for every operation /openapi.json lists (valid ones and broken
ones), sends them to a live fleet, and checks each answer's status, media type,
headers and body against what the document declares for it.

Bounded: a handful of examples per operation and mode, no shrinking, a fixed seed
database off, so it costs seconds. Generated images are rarely decodable, so
almost nothing reaches the worker.
"""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sam2fleet.api.main import create_app
from sam2fleet.shared.settings import Settings
from tests.support import Fleet

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# The document as the app builds it; the first test checks the live fleet serves this
# very document. (Loaded here rather than from the live URL: schemathesis' lazy
# fixture loader does not run on this pytest.)
DOCUMENT = create_app(Settings()).openapi()
# A video upload's raw body: schemathesis has no generator for these media types of
# its own; arbitrary bytes (rarely a decodable video) exercise the 4xx answers.
for media_type in ("video/*", "application/zip"):
    schemathesis.openapi.media_type(media_type, st.binary(max_size=512))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    no_shrink=True,
    deterministic=True,
    database="none",
)


def test_the_fleet_serves_this_document(fleet: Fleet) -> None:
    assert httpx.get(f"{fleet.base_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_live_api_answers_as_its_document_says(case: Any, fleet: Fleet) -> None:
    case.call_and_validate(base_url=fleet.base_url, checks=CHECKS, timeout=60)
