"""What is installed and what is loaded; per-detector readiness (which also warms up)."""

from __future__ import annotations

from fastapi import APIRouter

from intellioptics_common.schemas import ErrorBody
from intellioptics_inference.deps import InferenceDep, SettingsDep
from intellioptics_inference.errors import DetectorLoadingError, ModelsDirUnavailableError
from intellioptics_inference.routes.views import loaded_view
from intellioptics_inference.schemas import DetectorList, DetectorReady, DetectorState, InstalledDetector
from intellioptics_inference.service import check_detector_id

router = APIRouter(prefix="/detectors", tags=["detectors"])


@router.get("", response_model=DetectorList)
async def list_installed(service: InferenceDep, settings: SettingsDep) -> DetectorList:
    if not service.models_dir_readable():
        raise ModelsDirUnavailableError(f"The models directory {service.models_dir} cannot be read.")
    loaded = {entry.detector_id: entry for entry in service.cache.snapshot()}
    detectors = []
    for detector_id, (primary, oodd) in sorted(service.installed().items()):
        entry = loaded.get(detector_id)
        failure = service.cache.failure(detector_id)
        state: DetectorState
        if entry is not None:
            state = "loaded"
        elif service.cache.is_loading(detector_id):
            state = "loading"
        elif failure is not None:
            state = "refused"
        else:
            state = "on_disk"
        detectors.append(
            InstalledDetector(
                detector_id=detector_id,
                primary_versions_on_disk=primary,
                oodd_versions_on_disk=oodd,
                state=state,
                loaded=loaded_view(entry) if entry is not None else None,
                refused_reason=failure.public_message if failure is not None else None,
                refused_versions=list(service.cache.refused_versions(detector_id)),
            )
        )
    return DetectorList(
        models_dir=str(service.models_dir), cache_size=settings.inference_cache_size, detectors=detectors
    )


@router.get(
    "/{detector_id}/ready",
    response_model=DetectorReady,
    responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def detector_ready(detector_id: str, service: InferenceDep) -> DetectorReady:
    """200 when loaded; otherwise starts the load in the background and answers 503."""
    model = service.cache.loaded(check_detector_id(detector_id))
    if model is None:
        service.cache.start_load(detector_id)  # raises 404 / the remembered refusal
        raise DetectorLoadingError(f"The model of detector {detector_id} is loading; ask again shortly.")
    return DetectorReady(
        detector_id=detector_id,
        primary_model_version=model.primary.version,
        primary_model_id=model.primary.model_id,
        oodd_model_version=None if model.oodd is None else model.oodd.version,
        oodd_model_id=None if model.oodd is None else model.oodd.model_id,
        fused=model.fused,
    )
