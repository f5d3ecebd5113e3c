"""Errors of the inference service, on top of :mod:`intellioptics_common.errors`.

The edge API reads our statuses: 404 means "no model installed here", 503 "not ready
now" (loading, or the installed package is unusable), 400/413 "bad image".

Hierarchy::

    InvalidInputError (400)
    └── InvalidDetectorIdError         not a detector id (also keeps paths out of the models dir)
    NotFoundError (404)
    └── DetectorNotFoundError          no model package on disk for this detector
    ServiceUnavailableError (503)
    ├── DetectorLoadingError           still loading after the wait timeout
    ├── ModelUnusableError             every package on disk was refused (corrupt, invalid)
    └── ModelsDirUnavailableError      the models directory cannot be read
"""

from __future__ import annotations

from intellioptics_common.errors import InvalidInputError, NotFoundError, ServiceUnavailableError


class InvalidDetectorIdError(InvalidInputError):
    code = "invalid_detector_id"


class DetectorNotFoundError(NotFoundError):
    code = "detector_not_found"


class DetectorLoadingError(ServiceUnavailableError):
    code = "detector_loading"


class ModelUnusableError(ServiceUnavailableError):
    code = "model_unusable"


class ModelsDirUnavailableError(ServiceUnavailableError):
    code = "models_dir_unavailable"
