"""Turning a request into (job spec, image bytes): JSON with base64, or multipart."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TypeVar

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from shared.errors import BadRequest, ImageTooLarge, InvalidInput, UnsupportedMediaType
from shared.schemas import JobCreate, JobSpec
from shared.settings import Settings

T = TypeVar("T", bound=JobSpec)
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


async def job_from_request(
    request: Request, settings: Settings
) -> tuple[JobSpec, bytes | None, str | None]:
    """The spec, plus either the image bytes or the id of an uploaded image."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # The context closes the spooled temporary files of the parts.
        async with request.form(
            max_files=1, max_fields=8, max_part_size=settings.max_request_bytes
        ) as form:
            upload, job_field = form.get("image"), form.get("job")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("multipart requests need a file part named `image`")
            # No `job` part: segment everything, the one mode that needs no prompts.
            spec = parse_json(JobSpec, job_field.encode()) if isinstance(job_field, str) \
                else JobSpec(mode="auto")
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
