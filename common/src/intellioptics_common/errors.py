"""Errors shared by every IntelliOptics part.

Each error carries a ``public_message`` (safe to show a client: it says what to fix)
apart from the log message, and a ``status_code`` that the services' single handler
table turns into one JSON error body (:class:`intellioptics_common.schemas.ErrorBody`).

Hierarchy::

    IntelliOpticsError                 500  (never raised directly)
    ├── InvalidInputError              400
    │   ├── ImageDecodeError           400  not an image, truncated, malformed
    │   ├── ConfigError                400  bad edge-config / pipeline_config / YAML
    │   ├── DepthMapError              400  depth map unreadable, 8-bit, NaN, empty, wrong shape
    │   │   └── DepthRequiredError     400  the model takes a depth map and none came with the image
    │   └── UnsafeModelError           400  ONNX file with external data, disallowed ops, over limits
    ├── ImageTooLargeError             413  bytes or pixels over the limits
    ├── UnsupportedMediaTypeError      415
    ├── AuthenticationError            401
    ├── PermissionDeniedError          403
    ├── NotFoundError                  404
    ├── ConflictError                  409
    ├── RateLimitedError               429
    ├── PackageError                   422  model package unreadable or inconsistent
    │   └── PackageIntegrityError      422  sha256 mismatch, missing file
    └── ServiceUnavailableError        503  a dependency is down or still loading
"""

from __future__ import annotations

from typing import ClassVar


class IntelliOpticsError(Exception):
    """Base of every domain error; ``public_message`` is what the client sees."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, public_message: str, *, log_message: str | None = None) -> None:
        super().__init__(log_message or public_message)
        self.public_message = public_message


class InvalidInputError(IntelliOpticsError):
    status_code = 400
    code = "invalid_input"


class ImageDecodeError(InvalidInputError):
    code = "invalid_image"


class ConfigError(InvalidInputError):
    code = "invalid_config"


class DepthMapError(InvalidInputError):
    code = "invalid_depth"


class DepthRequiredError(DepthMapError):
    code = "depth_required"


class UnsafeModelError(InvalidInputError):
    """A model file that reads outside itself or needs unbounded resources (model_check)."""

    code = "unsafe_model"


class ImageTooLargeError(IntelliOpticsError):
    status_code = 413
    code = "image_too_large"


class UnsupportedMediaTypeError(IntelliOpticsError):
    status_code = 415
    code = "unsupported_media_type"


class AuthenticationError(IntelliOpticsError):
    status_code = 401
    code = "unauthenticated"


class PermissionDeniedError(IntelliOpticsError):
    status_code = 403
    code = "forbidden"


class NotFoundError(IntelliOpticsError):
    status_code = 404
    code = "not_found"


class ConflictError(IntelliOpticsError):
    status_code = 409
    code = "conflict"


class RateLimitedError(IntelliOpticsError):
    status_code = 429
    code = "rate_limited"


class PackageError(IntelliOpticsError):
    status_code = 422
    code = "invalid_model_package"


class PackageIntegrityError(PackageError):
    code = "model_package_integrity"


class ServiceUnavailableError(IntelliOpticsError):
    status_code = 503
    code = "service_unavailable"
