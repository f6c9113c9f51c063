"""`/v1/images`: upload an image once, reuse its id in many jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sam2fleet.api.auth import Owner, check_rate
from sam2fleet.api.deps import ServiceDep, SettingsDep
from sam2fleet.api.openapi import answers, file_upload
from sam2fleet.api.payload import decode_base64_image, open_form, parse_json_object, read_upload
from sam2fleet.shared.errors import InvalidInput
from sam2fleet.shared.schemas import ImageInfo

router = APIRouter(prefix="/v1/images", tags=["images"])

_UPLOAD_BODY = file_upload("image", "image/*", base64_json=True)


@router.post(
    "",
    status_code=201,
    response_model=ImageInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=answers(400, 401, 413, 415, 422, 429, 503),
)
async def upload_image(
    request: Request, service: ServiceDep, settings: SettingsDep, owner: Owner
) -> Any:
    """Multipart `image` part, JSON `{"image": base64}`, or the raw file as the body."""
    await check_rate(request, owner)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with open_form(request, settings, max_fields=1) as form:
            upload = form.get("image")
            if isinstance(upload, str) or upload is None:
                raise InvalidInput("multipart uploads need a file part named `image`")
            data = await read_upload(upload, settings)
    elif content_type.startswith("application/json"):
        body = parse_json_object(await request.body())
        if not isinstance(body.get("image"), str):
            raise InvalidInput('JSON uploads look like {"image": "<base64>"}')
        data = decode_base64_image(body["image"], settings)
    else:
        data = await request.body()
    probed = await service.store_image(data, owner)
    return ImageInfo(
        image_id=probed.image_id, width=probed.width, height=probed.height, format=probed.format
    )
