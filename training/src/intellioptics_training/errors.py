"""Errors of the training library.

Hierarchy::

    InvalidInputError (common, 400)
    └── DatasetError         the data cannot train a model (empty, one class, bad labels)
    TrainingCancelled        cooperative cancellation asked for by the caller
"""

from __future__ import annotations

from intellioptics_common.errors import InvalidInputError


class DatasetError(InvalidInputError):
    code = "invalid_dataset"

    def __init__(self, public_message: str) -> None:
        super().__init__(public_message)


class TrainingCancelled(Exception):
    """Raised between steps when ``cancel_check()`` returns True."""
