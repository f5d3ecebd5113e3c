""":class:`Trainer` backed by the training library (``intellioptics_training.trainer`` for
classes, ``intellioptics_training.depth`` for classes from RGB + depth pairs,
``intellioptics_training.detection`` for COUNT and BOUNDING_BOX).

Both class trainers cross-fit the same way and return the same out-of-fold answers, so
a depth version is measured, calibrated and promoted by exactly the RGB version's path.

The library trains in memory and writes a model package; the worker reads that package
back with the common reader, so what it uploads is byte for byte what the library
exported and verified (sha256 manifest), never a second serialisation.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intellioptics_common.confidence import predict_from_probabilities
from intellioptics_common.detection import from_candidates
from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.imaging import decode_image
from intellioptics_common.preprocessing import resize_rgb
from intellioptics_common.schemas import DEFAULT_MAX_OBJECTS, DETECTION_MODES
from intellioptics_worker.cloud import EpochReport
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.scoring import Scored, Scorer
from intellioptics_worker.settings import WorkerSettings
from intellioptics_worker.training import CancelCheck, Exported, ProgressCallback, TrainedVersion, read_back

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
        max_objects: int | None = None,
        depth: bool = False,
    ) -> TrainedVersion:
        if mode in DETECTION_MODES:
            return self._train_boxes(
                images,
                detector_id=detector_id,
                mode=mode,
                class_name=class_names[0],
                threshold=threshold,
                folds=folds,
                max_objects=max_objects or DEFAULT_MAX_OBJECTS,
                on_progress=on_progress,
                cancel_check=cancel_check,
            )
        if trainer == "anomaly":
            return self._train_anomaly(
                images, detector_id=detector_id, folds=folds, on_progress=on_progress, cancel_check=cancel_check
            )
        from intellioptics_training.errors import TrainingCancelled
        from intellioptics_training.trainer import export_package

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

        options: dict[str, Any] = {
            "seed": self._settings.seed,
            "threshold": threshold,
            "folds": folds,
            "progress_callback": progress,
            "cancel_check": cancel_check,
        }
        names = tuple(class_names)
        try:
            if depth:  # one kind of depth trainer: ``trainer`` names the RGB ones
                trained = _train_depth(images, LIBRARY_MODES[mode], names, **options)
            else:
                trained = _train_rgb(images, LIBRARY_MODES[mode], names, trainer=trainer, **options)
        except TrainingCancelled:
            cancel_check()  # raises the worker's own reason (cancelled, or stopping)
            raise
        files, primary_metadata, oodd_metadata = _exported(export_package, detector_id, trained)
        return TrainedVersion(
            files=files,
            primary_metadata=primary_metadata,
            oodd_metadata=oodd_metadata,
            trainer=str(primary_metadata["trainer"]),
            out_of_fold=_out_of_fold(trained.out_of_fold, tuple(class_names)),
            folds=trained.out_of_fold.folds if trained.out_of_fold else 0,
            calibration=trained.calibration.to_dict() if trained.calibration else None,
        )

    def _train_anomaly(
        self,
        images: Sequence[LabeledImage],
        *,
        detector_id: str,
        folds: int,
        on_progress: ProgressCallback,
        cancel_check: CancelCheck,
    ) -> TrainedVersion:
        """An anomaly model (``intellioptics_training.anomaly``) from the NO images alone.
        Out of fold: each good image scored against a bank built without it (the library's
        cross-fit, which also sets the threshold); each YES image, which never enters the
        bank, scored by the served version as the edge runs it."""
        from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
        from intellioptics_training.backbone import DEFAULT_INPUT
        from intellioptics_training.data import Sample, prepare_good
        from intellioptics_training.errors import TrainingCancelled

        good = [image for image in images if image.label == "NO"]
        # Stretched to one size rather than refused: a job cannot ask back, and one camera
        # gives one size anyway.
        data = prepare_good(
            [Sample(i.image, "NO", i.image_query_id) for i in good], DEFAULT_INPUT, allow_mixed_sizes=True
        )
        stages = {"features": (0.0, 0.6), "threshold": (0.6, 0.85), "bank": (0.85, 0.9), "export": (0.9, 0.92)}

        def progress(stage: str, step: int, total: int) -> None:
            start, end = stages.get(stage, (0.0, 1.0))
            on_progress(start + (end - start) * (step / total if total else 1.0), f"{stage} {step}/{total}", None)

        options = AnomalyOptions(folds=max(2, folds), seed=self._settings.seed)
        try:
            trained = train_anomaly(data, options, progress=progress, cancel_check=cancel_check)
        except TrainingCancelled:
            cancel_check()
            raise
        files, primary_metadata, oodd_metadata = _exported(export_anomaly_package, detector_id, trained)
        spec = trained.spec
        answers: dict[str, Scored] = {}
        for name, raw in zip(data.names, trained.crossfit_scores, strict=True):
            score = float(1.0 / (1.0 + np.exp(-(raw - spec.raw_threshold) / spec.raw_scale)))
            # A good image is the OODD model's own training image: in domain by construction.
            prediction = predict_from_probabilities([1.0 - score, score], ("NO", "YES"), 1.0)
            answers[name] = Scored(prediction.label, prediction.confidence, prediction.raw_primary_confidence, 1.0)
        defects = [image for image in images if image.label == "YES"]
        if defects:
            scorer = Scorer(files)
            for image in defects:
                answers[image.image_query_id] = scorer.score(image.image)
        on_progress(1.0, f"scored {len(defects)} YES image(s) that no bank holds", None)
        return TrainedVersion(
            files=files,
            primary_metadata=primary_metadata,
            oodd_metadata=oodd_metadata,
            trainer=str(primary_metadata["trainer"]),
            out_of_fold=answers,
            folds=options.folds,
            calibration={
                "method": "anomaly: threshold from good images alone, cross-fitted to a "
                f"{spec.target_false_alarm:.0%} false-alarm rate; score 0.5 is the threshold",
                "target_false_alarm": spec.target_false_alarm,
                "crossfit_false_alarm_rate": trained.validation["crossfit_false_alarm_rate"],
                "good_images": trained.training_set_size,
                "unreadable_images": trained.skipped,
                "bank_patches": trained.bank_patches,
            },
        )

    def _train_boxes(
        self,
        images: Sequence[LabeledImage],
        *,
        detector_id: str,
        mode: str,
        class_name: str,
        threshold: float,
        folds: int,
        max_objects: int,
        on_progress: ProgressCallback,
        cancel_check: CancelCheck,
    ) -> TrainedVersion:
        """A detection head on the shared backbone (``intellioptics_training.detection``),
        cross-fitted: every image trains the served heads and has an out-of-fold answer."""
        from intellioptics_training.detection import (
            DetectionOptions,
            export_detection_package,
            train_detection,
        )
        from intellioptics_training.errors import TrainingCancelled

        data = _box_set(images, class_name)
        options = DetectionOptions(
            epochs=self._settings.detection_epochs,
            folds=folds,
            max_count=max_objects,
            threshold=threshold,
            seed=self._settings.seed,
        )

        def progress(stage: str, step: int, total: int) -> None:
            done = step / total if total else 1.0
            if stage == "features":
                fraction = 0.4 * done
            elif stage.startswith("fold "):
                fold, of = (int(v) for v in stage.split()[1].split("/"))
                fraction = 0.4 + 0.57 * (fold - 1 + done) / of
            else:
                fraction = 0.97 + 0.03 * done
            on_progress(fraction, f"{stage} {step}/{total}", None)

        try:
            trained = train_detection(
                data,
                "count" if mode == "COUNT" else "bounding_box",
                options,
                progress=progress,
                cancel_check=cancel_check,
            )
        except TrainingCancelled:
            cancel_check()
            raise
        files, primary_metadata, oodd_metadata = _exported(export_detection_package, detector_id, trained)
        answers = {
            name: from_candidates(found, spec=trained.spec, mode=mode)
            for name, found in zip(data.names, trained.oof_candidates, strict=True)
        }
        spec = trained.spec
        return TrainedVersion(
            files=files,
            primary_metadata=primary_metadata,
            oodd_metadata=oodd_metadata,
            trainer=str(primary_metadata["trainer"]),
            out_of_fold_boxes=answers,
            folds=int(trained.out_of_fold["folds"]),
            calibration={
                "method": "cross-fit: box threshold by out-of-fold F1 + count exact-match, count confidence tempered"
                " until confident out-of-fold counts are right at least T of the time (Wilson 95 % lower bound)",
                "threshold": threshold,
                "box_threshold": spec.box_threshold,
                "count_temperature": spec.count_temperature,
                "candidate_logistic": [spec.candidate_a, spec.candidate_b],
                "unreadable_images": data.skipped,
            },
        )


def _exported(export: Callable[[Path, str, Any], object], detector_id: str, trained: Any) -> Exported:
    """The package the library's ``export`` writes, read back as the registry will store it."""
    with tempfile.TemporaryDirectory(prefix="io-worker-") as scratch:
        export(Path(scratch), detector_id, trained)
        return read_back(Path(scratch), detector_id)


def _train_rgb(images: Sequence[LabeledImage], mode: str, class_names: tuple[str, ...], **options: Any) -> Any:
    from intellioptics_training.trainer import Sample, train_detector

    samples = [Sample(image.image, image.label, image.image_query_id) for image in images]
    return train_detector(samples, mode, class_names, **options)


def _train_depth(images: Sequence[LabeledImage], mode: str, class_names: tuple[str, ...], **options: Any) -> Any:
    """The fused RGB + depth model; pairs the library cannot read (image or depth) are
    left out and counted as unreadable, as the RGB trainer counts unreadable images."""
    from intellioptics_training.depth import DepthSample, prepare_depth, train_depth_detector

    samples = [DepthSample(image.image, image.depth or b"", image.label, image.image_query_id) for image in images]
    return train_depth_detector(prepare_depth(samples, mode, class_names), mode, **options)


def _box_set(images: Sequence[LabeledImage], class_name: str) -> Any:
    """The labeled images at the backbone's input size, with their boxes as YOLO rows."""
    from intellioptics_training.backbone import DEFAULT_INPUT
    from intellioptics_training.detection import BoxSet

    data = BoxSet([], [], (class_name,))
    for image in images:
        try:
            rgb = decode_image(image.image).rgb
        except IntelliOpticsError:
            data.skipped += 1  # the cloud accepted it, so this is rare: counted, not fatal
            continue
        rows = [(0.0, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0) for x0, y0, x1, y1 in image.boxes]
        data.rgb.append(resize_rgb(rgb, DEFAULT_INPUT))
        data.boxes.append(np.array(rows, dtype=np.float64).reshape(-1, 5))
        data.names.append(image.image_query_id)
    return data


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
