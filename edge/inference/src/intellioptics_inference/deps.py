"""FastAPI dependencies: the resources made in ``lifespan``, reached through ``app.state``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on a worker
thread, which costs two thread hops per request on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from intellioptics_inference.service import InferenceService
from intellioptics_inference.settings import InferenceSettings


async def _service(request: Request) -> InferenceService:
    return request.app.state.service


async def _settings(request: Request) -> InferenceSettings:
    return request.app.state.settings


InferenceDep = Annotated[InferenceService, Depends(_service)]
SettingsDep = Annotated[InferenceSettings, Depends(_settings)]
