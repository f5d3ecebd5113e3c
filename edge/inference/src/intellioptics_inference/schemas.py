"""Wire models of the inference service's own endpoints (``/infer`` answers with the
common :class:`intellioptics_common.schemas.InferenceResult`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class LoadedDetector(BaseModel):
    detector_id: str
    primary_model_version: int
    primary_model_id: str
    oodd_model_version: int | None
    oodd_model_id: str | None
    fused: bool
    size_bytes: int
    load_seconds: float


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    models_dir: str
    loaded: list[LoadedDetector]


class DetectorReady(BaseModel):
    ready: Literal[True] = True
    detector_id: str
    primary_model_version: int
    primary_model_id: str
    oodd_model_version: int | None
    oodd_model_id: str | None
    fused: bool


DetectorState = Literal["loaded", "loading", "refused", "on_disk"]


class InstalledDetector(BaseModel):
    detector_id: str
    primary_versions_on_disk: list[int]
    oodd_versions_on_disk: list[int]
    state: DetectorState
    loaded: LoadedDetector | None = None
    refused_reason: str | None = None  # why nothing could be loaded
    refused_versions: list[str] = []  # versions skipped (an older one serves), with reasons


class DetectorList(BaseModel):
    models_dir: str
    cache_size: int
    detectors: list[InstalledDetector]
