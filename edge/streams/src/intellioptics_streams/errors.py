"""Errors of the stream service, on top of :mod:`intellioptics_common.errors`.

Messages are redacted before they are raised: they end up in ``last_error`` of
``GET /streams`` and in the log, where camera passwords must never appear.

Hierarchy::

    IntelliOpticsError
    ├── SourceError                    a source could not be opened or read (retried)
    │   └── SourceUnusableError        it opened but cannot serve frames (no video; state "error")
    └── EdgeApiError                   the edge API refused or did not answer a call
"""

from __future__ import annotations

from intellioptics_common.errors import IntelliOpticsError


class SourceError(IntelliOpticsError):
    code = "source_error"


class SourceUnusableError(SourceError):
    code = "source_unusable"


class EdgeApiError(IntelliOpticsError):
    code = "edge_api_error"
