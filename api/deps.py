"""Dependencies of the route handlers, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sam2fleet.api.service import JobService
from sam2fleet.shared.settings import Settings


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[JobService, Depends(_service)]
