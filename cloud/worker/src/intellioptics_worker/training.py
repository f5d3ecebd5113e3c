"""The seam between the worker and the training library.

The job runner only needs "train on these labeled images, give me a primary + OODD
version as bytes and configs"; :class:`LibraryTrainer` does that with
``intellioptics_training``. Keeping the seam this narrow lets unit tests of the runner
use a tiny trainer and lets the library evolve without touching the job logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from intellioptics_worker.cloud import EpochReport
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.scoring import ModelFiles

ProgressCallback = Callable[[float, str | None, EpochReport | None], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainedVersion:
    files: ModelFiles
    primary_metadata: dict[str, Any]
    oodd_metadata: dict[str, Any] | None
    trainer: str  # the trainer that actually ran ("auto" resolved)


class Trainer(Protocol):
    def train(
        self,
        images: Sequence[LabeledImage],
        *,
        detector_id: str,
        mode: str,
        class_names: Sequence[str],
        trainer: str,
        on_progress: ProgressCallback,
        cancel_check: CancelCheck,
    ) -> TrainedVersion:
        """Train primary + OODD on ``images``. ``on_progress(fraction 0..1, message, epoch)``;
        ``cancel_check()`` raises (or returns True) when training must stop."""
        ...
