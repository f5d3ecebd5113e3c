"""The seam between the worker and the training library.

The job runner only needs "train on these labeled images, give me a primary + OODD
version as bytes and configs"; :class:`LibraryTrainer` does that with
``intellioptics_training``. Keeping the seam this narrow lets unit tests of the runner
use a tiny trainer and lets the library evolve without touching the job logic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from intellioptics_common.detection import DetectionResult
from intellioptics_common.model_package import read_latest
from intellioptics_worker.cloud import EpochReport
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.errors import ModelError
from intellioptics_worker.scoring import ModelFiles, Scored

ProgressCallback = Callable[[float, str | None, EpochReport | None], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainedVersion:
    """A version trained on every image it was given. ``out_of_fold`` holds, per image
    query id, what a cross-fitted model that never saw the image answered (through the
    served version's calibration): the worker's metrics and promotion decision read it."""

    files: ModelFiles
    primary_metadata: dict[str, Any]
    oodd_metadata: dict[str, Any] | None
    trainer: str  # the trainer that actually ran ("auto" resolved)
    out_of_fold: Mapping[str, Scored] = field(default_factory=dict)
    folds: int = 0
    calibration: Mapping[str, Any] | None = None
    # COUNT / BOUNDING_BOX: per image query id, the out-of-fold count and boxes.
    out_of_fold_boxes: Mapping[str, DetectionResult] = field(default_factory=dict)


class Trainer(Protocol):
    def train(
        self,
        images: Sequence[LabeledImage],
        *,
        detector_id: str,
        mode: str,
        class_names: Sequence[str],
        trainer: str,
        threshold: float,
        folds: int,
        on_progress: ProgressCallback,
        cancel_check: CancelCheck,
        max_objects: int | None = None,
        depth: bool = False,
    ) -> TrainedVersion:
        """Train primary + OODD on all ``images``, cross-fitting ``folds`` models for the
        out-of-fold answers and calibrating for ``threshold``. COUNT and BOUNDING_BOX
        (``max_objects``: the detector's max_count / max_num_bboxes) train a detection
        model on ``image.boxes`` and fill ``out_of_fold_boxes``. With ``depth`` every
        image has ``image.depth`` and the primary takes both (a depth model).
        ``on_progress(fraction 0..1, message, epoch)``; ``cancel_check()`` raises (or
        returns True) when training must stop."""
        ...


# A version's files with its primary's and its OODD's metadata.
Exported = tuple[ModelFiles, dict[str, Any], dict[str, Any] | None]


def read_back(scratch: Path, detector_id: str) -> Exported:
    """The package the library exported, as the registry will store it (sha256-checked)."""
    primary = read_latest(scratch, detector_id, "primary")
    oodd = read_latest(scratch, detector_id, "oodd")
    if primary is None:
        raise ModelError("the training library exported no primary model")
    files = ModelFiles(
        primary=primary.model_bytes(),
        primary_config=primary.pipeline,
        oodd=oodd.model_bytes() if oodd else None,
        oodd_config=oodd.pipeline if oodd else None,
    )
    return files, asdict(primary.metadata), asdict(oodd.metadata) if oodd else None
