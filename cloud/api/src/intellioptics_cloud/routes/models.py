"""Model registry per detector, signed binary downloads, and the edge's fetch-model-urls."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from intellioptics_cloud.deps import Admin, EdgeDevice, ModelReader, ModelWriter, Reader, ResourcesDep, SessionDep
from intellioptics_cloud.models import ModelVersionRow
from intellioptics_cloud.routes.paging import public_base_url
from intellioptics_cloud.schemas import Decision, ModelCompare, ModelManifest, ModelVersion
from intellioptics_cloud.services import registry
from intellioptics_common.errors import InvalidInputError
from intellioptics_common.jsonlimits import loads_limited
from intellioptics_common.schemas import EdgeModelInfo

router = APIRouter(tags=["models"])

# Bounded to the database's INTEGER: a 20-digit version must be a 422, not a driver overflow (500).
_MAX_VERSION = 2**31 - 1
VersionPath = Annotated[int, Path(ge=0, le=_MAX_VERSION)]
VersionQuery = Annotated[int, Query(ge=0, le=_MAX_VERSION)]
edge_router = APIRouter(tags=["edge"])


def version_out(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        detector_id=row.detector_id,
        version=row.version,
        status=row.status,
        trainer=row.trainer,
        created_at=row.created_at,
        metrics=row.metrics,
        training_set_size=row.training_set_size,
        class_counts=row.class_counts,
        dataset_image_query_ids=row.dataset_image_query_ids,
        decision=None if row.decision is None else Decision.model_validate(row.decision),
        primary_sha256=row.primary_sha256,
        oodd_sha256=row.oodd_sha256,
        primary_pipeline_config=row.primary_pipeline_config,
        oodd_pipeline_config=row.oodd_pipeline_config,
    )


@router.get("/detectors/{detector_id}/models", response_model=list[ModelVersion])
def list_models(detector_id: str, principal: Reader, session: SessionDep) -> list[ModelVersion]:
    return [version_out(r) for r in registry.list_versions(session, principal, detector_id)]


@router.post("/detectors/{detector_id}/models", response_model=ModelVersion, status_code=status.HTTP_201_CREATED)
async def upload_model(
    detector_id: str,
    principal: ModelWriter,
    resources: ResourcesDep,
    primary: Annotated[UploadFile, File(description="primary model.buf (ONNX)")],
    manifest: Annotated[str, Form(description="ModelManifest as JSON")],
    oodd: Annotated[UploadFile | None, File(description="OODD model.buf (ONNX)")] = None,
) -> ModelVersion:
    # Depth-limited: a manifest nested ~900 levels parsed, then broke storing it (500).
    raw = loads_limited(manifest, "manifest")
    try:
        parsed = ModelManifest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"manifest is not a valid ModelManifest JSON: {exc}".splitlines()[0]) from None
    primary_bytes = await primary.read()
    oodd_bytes = await oodd.read() if oodd is not None else None

    def work() -> ModelVersion:
        with resources.sessions() as session:
            return version_out(
                registry.upload(resources, session, principal, detector_id, parsed, primary_bytes, oodd_bytes)
            )

    return await run_in_threadpool(work)


@router.get("/detectors/{detector_id}/models/compare", response_model=ModelCompare)
def compare(detector_id: str, a: VersionQuery, b: VersionQuery, principal: Reader, session: SessionDep) -> ModelCompare:
    row_a = registry.get_version(session, principal, detector_id, a)
    row_b = registry.get_version(session, principal, detector_id, b)
    return ModelCompare(
        a=version_out(row_a), b=version_out(row_b), metric_deltas=registry.compare_metrics(row_a.metrics, row_b.metrics)
    )


@router.post("/detectors/{detector_id}/models/rollback", response_model=ModelVersion)
def rollback(detector_id: str, principal: Admin, session: SessionDep) -> ModelVersion:
    return version_out(registry.rollback(session, principal, detector_id))


@router.get("/detectors/{detector_id}/models/{version}", response_model=ModelVersion)
def get_model(detector_id: str, version: VersionPath, principal: Reader, session: SessionDep) -> ModelVersion:
    return version_out(registry.get_version(session, principal, detector_id, version))


@router.post("/detectors/{detector_id}/models/{version}/activate", response_model=ModelVersion)
def activate(detector_id: str, version: VersionPath, principal: Admin, session: SessionDep) -> ModelVersion:
    return version_out(registry.activate(session, principal, detector_id, version))


@router.delete("/detectors/{detector_id}/models/{version}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(
    detector_id: str, version: VersionPath, principal: Admin, session: SessionDep, resources: ResourcesDep
) -> None:
    registry.delete_version(resources, session, principal, detector_id, version)


@router.get(
    "/detectors/{detector_id}/models/{version}/download",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download(
    detector_id: str,
    version: VersionPath,
    principal: ModelReader,
    session: SessionDep,
    resources: ResourcesDep,
    kind: Literal["primary", "oodd"] = "primary",
) -> Response:
    data = registry.download(resources, session, principal, detector_id, version, kind)
    return Response(content=data, media_type="application/octet-stream")


@router.get(
    "/model-binaries/{binary_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def model_binary(
    binary_id: str,
    session: SessionDep,
    resources: ResourcesDep,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(min_length=64, max_length=64)],
) -> Response:
    """No token: the HMAC signature over path and expiry is the authorisation."""
    binary = registry.signed_binary(resources, session, binary_id, expires, signature)
    return Response(content=binary.data, media_type="application/octet-stream", headers={"x-sha256": binary.sha256})


def _fetch(
    detector_id: str, request: Request, principal: EdgeDevice, session: SessionDep, resources: ResourcesDep
) -> EdgeModelInfo:
    return registry.edge_model_info(resources, session, principal, detector_id, public_base_url(request))


# Fields without a value are left out, never sent as null: SDK 1.3.1's generated client
# refuses null for them (ApiTypeError in download_mlbinary). A detector with no model yet
# answers 200 with only ``minimal_compatible``, which the edge's model updater reads as
# "nothing to download" (a 404 would count as a failed update).
for _path in ("/fetch-model-urls/{detector_id}", "/fetch-model-urls/{detector_id}/"):
    edge_router.add_api_route(
        _path,
        _fetch,
        methods=["GET"],
        response_model=EdgeModelInfo,
        response_model_exclude_none=True,
        include_in_schema=_path.endswith("}"),
    )
