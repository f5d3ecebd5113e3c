"""Errors of the edge API, on top of :mod:`intellioptics_common.errors`.

Every one maps to an HTTP status through the single handler table in ``app.py``.
Note for the gateway: nginx forwards 404/405/422 from the edge to the cloud, so the
edge answers 404 only when the cloud might know better (an unknown detector or image
query), and never 422 (request validation errors become 400).

Hierarchy::

    NotFoundError (404)
    ├── DetectorNotFoundError          not in edge-config and unknown to the cloud
    └── ImageQueryNotFoundError        not answered by this edge
    PermissionDeniedError (403)
    └── DetectorDisabledError          edge-config sets ``enabled: false``
    ConflictError (409)
    └── DuplicateImageQueryError       ``image_query_id`` already used here
    ServiceUnavailableError (503)
    ├── ModelNotReadyError             no model ready and escalation is not allowed
    ├── CloudUnavailableError          the cloud was needed but is absent or unreachable
    ├── EdgeNotBoundError              the edge cannot tell which cloud account it serves
    └── OutboxFullError                escalations fill the outbox (Retry-After)
    NotFoundError (404)
    └── DeadLetterNotFoundError        no such dead letter in the outbox
"""

from __future__ import annotations

from intellioptics_common.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)


class DetectorNotFoundError(NotFoundError):
    code = "detector_not_found"


class ImageQueryNotFoundError(NotFoundError):
    code = "image_query_not_found"


class DetectorDisabledError(PermissionDeniedError):
    code = "detector_disabled"


class DuplicateImageQueryError(ConflictError):
    code = "duplicate_image_query"


class ModelNotReadyError(ServiceUnavailableError):
    code = "model_not_ready"


class CloudUnavailableError(ServiceUnavailableError):
    code = "cloud_unavailable"


class EdgeNotBoundError(ServiceUnavailableError):
    """No device token (nor ``INTELLIOPTICS_EDGE_ACCOUNT_ID``), or one the cloud refuses:
    the edge cannot tell whose callers to serve, so it serves no cloud-checked token."""

    code = "edge_not_bound"


class OutboxFullError(ServiceUnavailableError):
    code = "outbox_full"

    def __init__(self, public_message: str, *, retry_after_s: int) -> None:
        super().__init__(public_message)
        self.retry_after_s = retry_after_s


class DeadLetterNotFoundError(NotFoundError):
    code = "dead_letter_not_found"
