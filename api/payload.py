"""Turning a request into (job spec, image bytes): JSON with base64, or multipart."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from sam2fleet.shared.errors import BadRequest, ImageTooLarge, InvalidInput, UnsupportedMediaType
from sam2fleet.shared.schemas import JobCreate, JobSpec
from sam2fleet.shared.settings import Settings

T = TypeVar("T", bound=BaseModel)
_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,")


def decode_base64_image(text: str, settings: Settings) -> bytes:
    text = _DATA_URL.sub("", text.strip(), count=1)
    # 4 base64 characters carry 3 bytes: refuse before decoding anything too big.
    if len(text) * 3 // 4 > settings.max_image_bytes:
        raise ImageTooLarge(f"image is over the {settings.max_image_bytes}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("`image` is not valid base64") from None


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_json(model: type[T], body: bytes) -> T:
    if not body:
        raise BadRequest("empty request body; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    data = await upload.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(f"image is over the {settings.max_image_bytes}-byte limit")
    return data


@asynccontextmanager
async def open_form(
    request: Request, settings: Settings, *, max_fields: int
) -> AsyncIterator[FormData]:
    """The multipart form, its temporary files closed after; malformed parts are 400."""
    try:
        form = await request.form(
            max_files=1, max_fields=max_fields, max_part_size=settings.max_request_bytes
        )
    except (MultiPartException, HTTPException) as exc:
        raise BadRequest(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        yield form
    finally:
        await form.close()


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("the body must be a JSON object")
    return value


async def job_from_request(
    request: Request, settings: Settings
) -> tuple[JobSpec, bytes | None, str | None]:
    """The spec, plus either the image bytes or the id of an uploaded image."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # The context closes the spooled temporary files of the parts.
        async with open_form(request, settings, max_fields=8) as form:
            upload, job_field = form.get("image"), form.get("job")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("multipart requests need a file part named `image`")
            # No `job` part: segment everything, the one mode that needs no prompts.
            spec = (
                parse_json(JobSpec, job_field.encode())
                if isinstance(job_field, str)
                else JobSpec(mode="auto")
            )
            return spec, await read_upload(upload, settings), None
    if content_type.split(";")[0].strip() not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"unsupported content type {content_type!r}; send application/json or "
            "multipart/form-data"
        )
    create = parse_json(JobCreate, await request.body())
    spec = JobSpec.model_validate(create.model_dump(exclude={"image", "image_id"}))
    if create.image is not None:
        return spec, decode_base64_image(create.image, settings), None
    return spec, None, create.image_id
