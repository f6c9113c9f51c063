"""`/v1/models`: the variants this fleet knows, with live worker counts."""

from __future__ import annotations

from fastapi import APIRouter

from sam2fleet.api.auth import Owner
from sam2fleet.api.deps import ServiceDep, SettingsDep
from sam2fleet.api.openapi import answers
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.schemas import ModelPublic

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[ModelPublic], responses=answers(401, 503))
async def list_models(service: ServiceDep, settings: SettingsDep, _: Owner) -> list[ModelPublic]:
    warm = await service.warm_workers()
    return [
        ModelPublic(
            name=name,
            config=spec.config,
            default=name == settings.model,
            workers=sum(1 for w in warm if w.model == name),
            queued=await service.queue_depth(name),
        )
        for name, spec in MODELS.items()
    ]
