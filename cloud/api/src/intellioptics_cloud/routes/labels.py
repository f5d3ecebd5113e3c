"""``POST /labels`` as the SDK's ``add_label`` sends it."""

from __future__ import annotations

from fastapi import APIRouter, status

from intellioptics_cloud.deps import ResourcesDep, Reviewer, SessionDep
from intellioptics_cloud.services.image_queries import get_image_query
from intellioptics_cloud.services.labels import SOURCE_API, LabelRequest, apply_label
from intellioptics_common.schemas import ROI, LabelCreate, LabelValue

router = APIRouter(tags=["labels"])


@router.post("/labels", response_model=LabelValue, status_code=status.HTTP_201_CREATED)
def create_label(body: LabelCreate, principal: Reviewer, session: SessionDep, resources: ResourcesDep) -> LabelValue:
    iq = get_image_query(session, principal, body.image_query_id)
    label = apply_label(session, principal, iq, LabelRequest(iq.id, body.label, body.rois, SOURCE_API), resources.queue)
    session.commit()
    return LabelValue(
        confidence=1.0,
        class_name=label.label,
        rois=[ROI.model_validate(r) for r in label.rois] if label.rois else None,
        created_at=label.created_at,
        source="USER",
    )
