"""`/v1/models`: the variants this fleet knows, with live worker counts."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Owner
from api.deps import ServiceDep, SettingsDep
from shared.checkpoints import MODELS
from shared.schemas import ModelPublic

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[ModelPublic])
async def list_models(service: ServiceDep, settings: SettingsDep, _: Owner) -> list[ModelPublic]:
    warm = await service.warm_workers()
    return [
        ModelPublic(
            name=name,
            config=spec.config,
            default=name == settings.model,
            workers=sum(1 for w in warm if w.get("model") == name),
            queued=await service.queue_depth(name),
        )
        for name, spec in MODELS.items()
    ]
