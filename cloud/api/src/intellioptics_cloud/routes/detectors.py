"""Detectors (SDK-compatible), detector groups, and the detector extras (stats, settings, dataset)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from intellioptics_cloud.deps import Admin, Reader, SessionDep, Worker
from intellioptics_cloud.routes.paging import page_links
from intellioptics_cloud.schemas import (
    DatasetExample,
    DayCounts,
    DetectorSettings,
    DetectorSettingsOut,
    DetectorStats,
    EdgeLearning,
    EdgeLearningBucket,
)
from intellioptics_cloud.services import detectors, stats
from intellioptics_cloud.services.wire import depth_url, detector_out, image_url
from intellioptics_common.schemas import (
    Detector,
    DetectorCreate,
    DetectorGroup,
    DetectorGroupCreate,
    DetectorPatch,
    Page,
)

router = APIRouter(tags=["detectors"])

PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=1000)]


@router.post("/detectors", response_model=Detector, status_code=status.HTTP_201_CREATED)
def create_detector(body: DetectorCreate, principal: Admin, session: SessionDep) -> Detector:
    return detector_out(detectors.create_detector(session, principal, body))


@router.get("/detectors", response_model=Page[Detector])
def list_detectors(
    request: Request,
    principal: Reader,
    session: SessionDep,
    page: PageNumber = 1,
    page_size: PageSize = 10,
    name: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[Detector]:
    result = detectors.list_detectors(session, principal, page, page_size, name)
    nxt, prev = page_links(request, page, page_size, result.count)
    return Page[Detector](count=result.count, next=nxt, previous=prev, results=[detector_out(r) for r in result.rows])


@router.get("/detectors/{detector_id}", response_model=Detector)
def get_detector(detector_id: str, principal: Reader, session: SessionDep) -> Detector:
    return detector_out(detectors.get_detector(session, principal, detector_id))


@router.patch("/detectors/{detector_id}", response_model=Detector)
def patch_detector(detector_id: str, body: DetectorPatch, principal: Admin, session: SessionDep) -> Detector:
    return detector_out(detectors.patch_detector(session, principal, detector_id, body))


@router.delete("/detectors/{detector_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_detector(detector_id: str, request: Request, principal: Admin, session: SessionDep) -> None:
    detectors.delete_detector(session, principal, detector_id, request.app.state.resources.blobs)


@router.post("/detectors/{detector_id}/settings", response_model=DetectorSettingsOut)
def update_settings(
    detector_id: str, body: DetectorSettings, principal: Admin, session: SessionDep
) -> DetectorSettingsOut:
    row = detectors.update_settings(session, principal, detector_id, body)
    return DetectorSettingsOut(retrain_every_n_labels=row.retrain_every_n_labels, promotion_policy=row.promotion_policy)


@router.get("/detectors/{detector_id}/settings", response_model=DetectorSettingsOut)
def get_settings(detector_id: str, principal: Reader, session: SessionDep) -> DetectorSettingsOut:
    row = detectors.get_detector(session, principal, detector_id)
    return DetectorSettingsOut(retrain_every_n_labels=row.retrain_every_n_labels, promotion_policy=row.promotion_policy)


@router.get("/detectors/{detector_id}/stats", response_model=DetectorStats)
def detector_stats(detector_id: str, principal: Reader, session: SessionDep) -> DetectorStats:
    result = stats.detector_stats(session, principal, detector_id)
    return DetectorStats(
        labels_per_class=result.labels_per_class,
        by_source=result.by_source,
        over_time=[DayCounts(date=day, counts=counts) for day, counts in result.over_time],
        total_labels=result.total_labels,
        pending_reviews=result.pending_reviews,
        active_model_version=result.active_model_version,
    )


@router.get("/detectors/{detector_id}/stats/edge-learning", response_model=EdgeLearning)
def edge_learning(
    detector_id: str,
    principal: Reader,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=365, description="How many days back to read.")] = 30,
) -> EdgeLearning:
    """Edge answer rate and accuracy against the human labels, hour by hour (up to three
    days of data) or day by day, with the number of labels so far."""
    result = stats.edge_learning(session, principal, detector_id, days)
    return EdgeLearning(
        detector_id=detector_id,
        bucket=result.bucket,
        buckets=[
            EdgeLearningBucket(
                start=b.start,
                labels=b.labels,
                queries=b.queries,
                edge_answers=b.edge_answers,
                edge_answer_rate=b.edge_answer_rate,
                compared=b.compared,
                agreed=b.agreed,
                edge_accuracy=b.edge_accuracy,
            )
            for b in result.buckets
        ],
    )


@router.get("/detectors/{detector_id}/dataset", response_model=list[DatasetExample])
def dataset(detector_id: str, principal: Worker, session: SessionDep) -> list[DatasetExample]:
    return [
        DatasetExample(
            image_query_id=entry.label.image_query_id,
            label=entry.label.label,
            source=entry.label.source,
            created_at=entry.label.created_at,
            image_url=image_url(entry.label.image_query_id),
            rois=entry.label.rois,
            depth_url=depth_url(entry.label.image_query_id) if entry.has_depth else None,
        )
        for entry in stats.dataset(session, principal, detector_id)
    ]


@router.get("/detector-groups", response_model=list[DetectorGroup])
def list_groups(principal: Reader, session: SessionDep) -> list[DetectorGroup]:
    return [DetectorGroup(id=row.id, name=row.name) for row in detectors.list_groups(session, principal)]


@router.post("/detector-groups", response_model=DetectorGroup, status_code=status.HTTP_201_CREATED)
def create_group(body: DetectorGroupCreate, principal: Admin, session: SessionDep) -> DetectorGroup:
    row = detectors.create_group(session, principal, body.name)
    return DetectorGroup(id=row.id, name=row.name)
