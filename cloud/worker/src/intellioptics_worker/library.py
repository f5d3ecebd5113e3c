""":class:`Trainer` backed by the training library (``intellioptics_training.trainer``).

The library trains in memory and writes a model package; the worker reads that package
back with the common reader, so what it uploads is byte for byte what the library
exported and verified (sha256 manifest), never a second serialisation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from intellioptics_common.confidence import predict_from_probabilities
from intellioptics_common.model_package import read_latest
from intellioptics_worker.cloud import EpochReport
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.errors import ModelError
from intellioptics_worker.scoring import ModelFiles, Scored
from intellioptics_worker.settings import WorkerSettings
from intellioptics_worker.training import CancelCheck, ProgressCallback, TrainedVersion

LIBRARY_MODES = {"BINARY": "binary", "MULTI_CLASS": "multiclass"}
# Share of one training run per library stage: the backbone pass over every view of every
# image dominates; the heads train on cached maps in seconds.
# The cross-fitted heads come next, then the head on every image.
_STAGES = {
    "features": (0.0, 0.4),
    "crossfit": (0.4, 0.85),
    "primary": (0.85, 0.97),
    "oodd": (0.97, 0.99),
    "export": (0.99, 1.0),
}


class LibraryTrainer:
    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings

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
    ) -> TrainedVersion:
        from intellioptics_training.errors import TrainingCancelled
        from intellioptics_training.trainer import Sample, export_package, train_detector

        def progress(event: Any) -> None:
            start, end = _STAGES.get(event.stage, (0.0, 1.0))
            fraction = start + (end - start) * (event.step / event.total if event.total else 1.0)
            epoch = None
            if event.stage == "primary" and "loss" in event.metrics:
                epoch = EpochReport(
                    epoch=int(event.step),
                    loss=_float(event.metrics.get("loss")),
                    accuracy=_float(event.metrics.get("accuracy")),
                    val_accuracy=_float(event.metrics.get("val_accuracy")),
                )
            on_progress(fraction, f"{event.stage} {event.step}/{event.total}", epoch)

        try:
            trained = train_detector(
                [Sample(image.image, image.label, image.image_query_id) for image in images],
                LIBRARY_MODES[mode],
                tuple(class_names),
                trainer=trainer,
                seed=self._settings.seed,
                threshold=threshold,
                folds=folds,
                progress_callback=progress,
                cancel_check=cancel_check,
            )
        except TrainingCancelled:
            cancel_check()  # raises the worker's own reason (cancelled, or stopping)
            raise
        with tempfile.TemporaryDirectory(prefix="io-worker-") as scratch:
            export_package(Path(scratch), detector_id, trained)
            primary = read_latest(Path(scratch), detector_id, "primary")
            oodd = read_latest(Path(scratch), detector_id, "oodd")
            if primary is None:
                raise ModelError("the training library exported no primary model")
            files = ModelFiles(
                primary=primary.model_bytes(),
                primary_config=primary.pipeline,
                oodd=oodd.model_bytes() if oodd else None,
                oodd_config=oodd.pipeline if oodd else None,
            )
            return TrainedVersion(
                files=files,
                primary_metadata=asdict(primary.metadata),
                oodd_metadata=asdict(oodd.metadata) if oodd else None,
                trainer=primary.metadata.trainer,
                out_of_fold=_out_of_fold(trained.out_of_fold, tuple(class_names)),
                folds=trained.out_of_fold.folds if trained.out_of_fold else 0,
                calibration=trained.calibration.to_dict() if trained.calibration else None,
            )


def _out_of_fold(oof: Any, class_names: tuple[str, ...]) -> dict[str, Scored]:
    """The library's out-of-fold probabilities as the edge would answer them (common arithmetic)."""
    if oof is None:
        return {}
    scored = {}
    for name, probabilities, in_domain in zip(oof.names, oof.probabilities, oof.in_domain, strict=True):
        prediction = predict_from_probabilities([float(p) for p in probabilities], class_names, float(in_domain))
        scored[name] = Scored(
            prediction.label, prediction.confidence, prediction.raw_primary_confidence, float(in_domain)
        )
    return scored


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
