"""One training job, from claim to registration.

Order matters for crash safety: everything (download, training, evaluation of both
versions) happens in memory and in scratch space; the only write to the cloud's
registry is one multipart upload at the very end, which the cloud stores atomically.
A worker killed at any earlier point therefore leaves no trace but a job whose lease
runs out, and the cloud hands it to the next worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from intellioptics_common.detection import DetectionResult
from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.model_package import PipelineConfig
from intellioptics_common.schemas import DETECTION_MODES
from intellioptics_worker.boxes import BoxMetrics, check_boxes_trainable, kind, measure_boxes, select_boxed
from intellioptics_worker.cloud import (
    CloudClient,
    DatasetExample,
    DetectorInfo,
    EpochReport,
    Job,
    ModelVersionInfo,
    Registration,
)
from intellioptics_worker.dataset import (
    DatasetSelection,
    LabeledImage,
    check_trainable,
    download_images,
    select_depth,
    select_examples,
)
from intellioptics_worker.errors import CloudError, DatasetError, JobInterrupted, ModelError, WorkerError
from intellioptics_worker.progress import ProgressReporter
from intellioptics_worker.promotion import CANDIDATE, Decision, Measured, decide
from intellioptics_worker.scoring import BoxScorer, Metrics, ModelFiles, Scored, Scorer, measure
from intellioptics_worker.settings import WorkerSettings
from intellioptics_worker.training import TrainedVersion, Trainer

logger = logging.getLogger(__name__)

SUPPORTED_MODES = ("BINARY", "MULTI_CLASS", "COUNT", "BOUNDING_BOX")
ANOMALY = "anomaly"  # the job trainer that fits an anomaly model from good images only
MIN_GOOD_IMAGES = 4  # the training library's own least (intellioptics_training.anomaly)
# Share of the job's progress bar per phase: download, training runs, active-model scoring, upload.
_DOWNLOAD, _TRAIN_END, _COMPARE_END = 0.10, 0.88, 0.95


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # succeeded | failed | cancelled | interrupted
    model_version: int | None = None
    decision: Decision | None = None
    error: str | None = None


@dataclass(frozen=True)
class _ActiveModel:
    version: int
    files: ModelFiles | None
    trained_on: frozenset[str] | None
    unusable_reason: str | None = None
    obsolete: bool = False  # answers other classes than the detector has now: no yardstick


class JobRunner:
    def __init__(
        self,
        client: CloudClient,
        trainer: Trainer,
        settings: WorkerSettings,
        stop_requested: threading.Event | None = None,
        scoring_threads: int = 0,
    ) -> None:
        self._client = client
        self._trainer = trainer
        self._settings = settings
        self._stop_requested = stop_requested or threading.Event()
        self._threads = scoring_threads

    def run(self, job: Job) -> JobOutcome:
        """Run ``job`` and report its end to the cloud; never raises for a job-level failure."""
        logger.info("job %s: detector %s, trainer %s, attempt %d", job.id, job.detector_id, job.trainer, job.attempts)
        reporter = ProgressReporter(
            self._client, job.id, heartbeat_s=self._settings.heartbeat_s, stop_requested=self._stop_requested
        )
        try:
            with reporter:
                version, decision = self._run(job, reporter)
        except JobInterrupted as exc:
            status = "cancelled" if exc.code == "job_cancelled" else "interrupted"
            logger.info("job %s %s: %s", job.id, status, exc)
            return JobOutcome(job.id, status, error=str(exc))
        except IntelliOpticsError as exc:  # WorkerError, and the common errors of decoding and packages
            return self._fail(job, exc.public_message)
        except Exception as exc:
            logger.exception("job %s crashed", job.id)
            return self._fail(job, f"internal worker error: {exc!r}")
        try:
            self._client.complete_job(job.id, model_version=version)
        except WorkerError as exc:
            # The version is registered; only the job's bookkeeping is missing. Its lease runs
            # out and the cloud re-queues or fails it; the version stays valid either way.
            logger.warning("job %s: version %d registered but the job not completed: %s", job.id, version, exc)
        logger.info("job %s succeeded: version %d, %s (%s)", job.id, version, decision.action, decision.reason)
        return JobOutcome(job.id, "succeeded", model_version=version, decision=decision)

    def _fail(self, job: Job, message: str) -> JobOutcome:
        logger.warning("job %s failed: %s", job.id, message)
        try:
            self._client.complete_job(job.id, error=message)
        except WorkerError as exc:
            # The lease will expire and the cloud retries the job or marks it failed.
            logger.warning("job %s: could not report the failure: %s", job.id, exc)
        return JobOutcome(job.id, "failed", error=message)

    # --- the job itself -------------------------------------------------------------

    def _run(self, job: Job, reporter: ProgressReporter) -> tuple[int, Decision]:
        reporter.update(0.0, "reading the detector and its labels")
        reporter.flush()
        detector = self._client.get_detector(job.detector_id)
        if detector.mode not in SUPPORTED_MODES:
            raise DatasetError(
                f"Detectors of mode {detector.mode} cannot be trained yet (supported: {', '.join(SUPPORTED_MODES)})."
            )
        dataset = self._client.get_dataset(job.detector_id)
        trainer = resolve_trainer(detector, job.trainer, dataset, self._settings)
        judge = _judge(detector, self._settings, self._threads, anomaly=trainer == ANOMALY)
        selection = judge.select(dataset)
        reporter.check()

        def downloaded(done: int, total: int) -> None:
            reporter.update(_DOWNLOAD * done / total, f"downloading images {done}/{total}")
            reporter.check()

        images = download_images(selection.examples, self._client.get_image, downloaded, depth=selection.depth)
        active = self._active_model(detector)
        fresh = [
            active is None or active.trained_on is None or image.image_query_id not in active.trained_on
            for image in images
        ]
        final = self._train(detector, images, reporter, trainer=trainer, depth=selection.depth)
        # Every image trains the registered version; its out-of-fold answer measures it.
        answers = judge.out_of_fold(final)
        evaluated = [i for i, image in enumerate(images) if image.image_query_id in answers]
        if not evaluated:
            raise ModelError("the trainer returned no out-of-fold predictions: the version cannot be measured")
        predictions = {i: answers[images[i].image_query_id] for i in evaluated}
        new_metrics = judge.measure([images[i] for i in evaluated], [predictions[i] for i in evaluated], final.files)

        reporter.update(_TRAIN_END, "scoring the active version on the same images")
        reporter.flush()
        decision, comparison = self._decide(
            detector, judge, images, predictions, evaluated, fresh, active, new_metrics, final.files
        )
        reporter.check()

        reporter.update(_COMPARE_END, f"registering the new version ({decision.action})")
        reporter.flush()
        trained_ids = [image.image_query_id for image in images]
        metrics = {
            **new_metrics.to_dict(),
            "evaluation": {
                "method": "cross-fit",
                "folds": final.folds,
                "image_query_ids": [images[i].image_query_id for i in evaluated],
            },
            "calibration": dict(final.calibration) if final.calibration else None,
            "comparison": comparison,
            "promotion": decision.to_dict(),
            "skipped_labels": selection.skipped,
        }
        registered = self._client.register_model(
            job.detector_id,
            Registration(
                primary_model=final.files.primary,
                oodd_model=final.files.oodd,
                manifest=self._manifest(job, final, metrics, trained_ids, judge.counts(images), decision),
            ),
        )
        return int(registered["version"]), decision

    def _train(
        self,
        detector: DetectorInfo,
        images: Sequence[LabeledImage],
        reporter: ProgressReporter,
        *,
        trainer: str,
        depth: bool,
    ) -> TrainedVersion:
        span = _TRAIN_END - _DOWNLOAD
        label = "training on all RGB + depth pairs" if depth else "training on all labels"
        if trainer == ANOMALY:
            label = "training an anomaly model on the good (NO) images"

        def on_progress(fraction: float, message: str | None, epoch: EpochReport | None) -> None:
            reporter.update(
                _DOWNLOAD + span * min(max(fraction, 0.0), 1.0), f"{label}: {message}" if message else label
            )
            if epoch is not None:
                reporter.epoch(epoch)

        reporter.update(_DOWNLOAD, f"{label} ({len(images)} images, {self._settings.cv_folds}-fold cross-fitting)")
        reporter.flush()
        reporter.check()
        return self._trainer.train(
            images,
            detector_id=detector.id,
            mode=detector.mode,
            class_names=detector.class_names,
            trainer=trainer,
            threshold=detector.confidence_threshold,
            folds=self._settings.cv_folds,
            on_progress=on_progress,
            cancel_check=reporter.check,
            max_objects=detector.max_objects,
            depth=depth,
        )

    # --- the active version and the decision ----------------------------------------

    def _active_model(self, detector: DetectorInfo) -> _ActiveModel | None:
        versions: list[ModelVersionInfo] = self._client.list_models(detector.id)
        active = next((v for v in versions if v.status == "active"), None)
        if active is None:
            return None
        trained_on = None if active.dataset_image_query_ids is None else frozenset(active.dataset_image_query_ids)
        try:
            configs = self._client.get_version_configs(detector.id, active)
        except CloudError as exc:
            configs, why = None, exc.public_message
        else:
            why = "the cloud did not return its pipeline configuration"
        if configs is None:
            return _ActiveModel(active.version, None, trained_on, f"it could not be read: {why}", obsolete=False)
        try:
            primary_config = PipelineConfig.from_dict(configs.primary)
            oodd_config = PipelineConfig.from_dict(configs.oodd) if configs.oodd else None
        except IntelliOpticsError as exc:
            reason = f"its pipeline configuration is invalid: {exc.public_message}"
            return _ActiveModel(active.version, None, trained_on, reason, obsolete=False)
        if tuple(primary_config.class_names) != tuple(detector.class_names):
            reason = (
                f"its classes {list(primary_config.class_names)} are not the detector's {list(detector.class_names)}"
            )
            return _ActiveModel(active.version, None, trained_on, reason, obsolete=True)
        primary = self._client.download_model(detector.id, active.version, "primary")
        oodd = self._client.download_model(detector.id, active.version, "oodd") if oodd_config else None
        return _ActiveModel(active.version, ModelFiles(primary, primary_config, oodd, oodd_config), trained_on)

    def _decide(
        self,
        detector: DetectorInfo,
        judge: _Judge,
        images: Sequence[LabeledImage],
        predictions: dict[int, Any],
        evaluated: Sequence[int],
        fresh: Sequence[bool],
        active: _ActiveModel | None,
        own: Measured,
        files: ModelFiles,
    ) -> tuple[Decision, dict[str, object]]:
        """``own``: the new version's out-of-fold metrics on every image, which the
        threshold gate reads whatever the comparison with the active version says."""
        policy = detector.promotion_policy
        note: str | None
        if active is None:
            return decide(policy, None, None, own=own), {"active_version": None}
        if active.files is None:
            note = f"active version {active.version} cannot be compared: {active.unusable_reason}"
            if active.obsolete:
                decision = decide(policy, None, None, own=own, note=note)
                return decision, {"active_version": active.version, "note": note}
            # Not knowing whether the new version is better is not a reason to replace a working one.
            return Decision(CANDIDATE, note), {"active_version": active.version, "note": note}
        if active.files.primary_config.depth is not None and any(images[i].depth is None for i in evaluated):
            note = f"active version {active.version} takes depth, which the evaluation images do not all have"
            return Decision(CANDIDATE, note), {"active_version": active.version, "note": note}
        compare = [i for i in evaluated if fresh[i]]
        note = None if active.trained_on is not None else f"v{active.version} does not record its training images"
        if len({judge.kind(images[i]) for i in compare}) < len({judge.kind(images[i]) for i in evaluated}):
            compare = list(evaluated)
            note = f"too few images that v{active.version} did not train on; compared on all evaluation images"
        score = judge.scorer(active.files)
        shown = [images[i] for i in compare]
        new_metrics = judge.measure(shown, [predictions[i] for i in compare], files)
        active_metrics = judge.measure(shown, [score(image) for image in shown], active.files)
        decision = decide(policy, new_metrics, active_metrics, own=own, active_version=active.version, note=note)
        comparison = {
            "active_version": active.version,
            "image_query_ids": [image.image_query_id for image in shown],
            "new": new_metrics.to_dict(),
            "active": active_metrics.to_dict(),
        }
        if note:
            comparison["note"] = note
        return decision, comparison

    def _manifest(
        self,
        job: Job,
        final: TrainedVersion,
        metrics: dict[str, object],
        trained_ids: list[str],
        counts: dict[str, int],
        decision: Decision,
    ) -> dict[str, object]:
        files = final.files
        primary_metadata = {**final.primary_metadata, "metrics": metrics}
        return {
            "primary_pipeline_config": files.primary_config.to_dict(),
            "oodd_pipeline_config": files.oodd_config.to_dict() if files.oodd_config else None,
            "primary_metadata": primary_metadata,
            "oodd_metadata": final.oodd_metadata,
            "metrics": metrics,
            "training_set_size": len(trained_ids),
            "class_counts": counts,
            "dataset_image_query_ids": trained_ids,
            "training_job_id": job.id,
            "trainer": final.trainer,
            "activate": decision.activate,
            "decision_reason": decision.reason[:2000],
        }


# --- what differs between classes and boxes -------------------------------------------


class _Judge(Protocol):
    """How one kind of detector selects its labels, measures answers and scores a version."""

    def select(self, dataset: Sequence[DatasetExample]) -> DatasetSelection: ...
    def out_of_fold(self, final: TrainedVersion) -> Mapping[str, Any]: ...
    def measure(self, images: Sequence[LabeledImage], answers: Sequence[Any], files: ModelFiles) -> Measured: ...
    def scorer(self, files: ModelFiles) -> Callable[[LabeledImage], Any]: ...
    def kind(self, image: LabeledImage) -> str: ...
    def counts(self, images: Sequence[LabeledImage]) -> dict[str, int]: ...


@dataclass(frozen=True)
class _Classes:
    """BINARY and MULTI_CLASS: answers are :class:`Scored` labels."""

    detector: DetectorInfo
    settings: WorkerSettings
    threads: int

    def select(self, dataset: Sequence[DatasetExample]) -> DatasetSelection:
        selection = select_depth(select_examples(dataset, self.detector.mode, self.detector.class_names))
        labels = [example.label for example in selection.examples]
        check_trainable(labels, self.detector.class_names, self.settings.min_per_class)
        return selection

    def out_of_fold(self, final: TrainedVersion) -> Mapping[str, Scored]:
        return final.out_of_fold

    # files: the _Judge interface (the box judge reads the version's detection spec).
    def measure(self, images: Sequence[LabeledImage], answers: Sequence[Scored], files: ModelFiles) -> Metrics:  # noqa: ARG002
        labels = [image.label for image in images]
        return measure(labels, answers, self.detector.class_names, self.detector.confidence_threshold)

    def scorer(self, files: ModelFiles) -> Callable[[LabeledImage], Scored]:
        scorer = Scorer(files, self.threads)
        return lambda image: scorer.score(image.image, image.depth)

    def kind(self, image: LabeledImage) -> str:
        return image.label

    def counts(self, images: Sequence[LabeledImage]) -> dict[str, int]:
        counts = dict.fromkeys(self.detector.class_names, 0)
        for image in images:
            counts[image.label] = counts.get(image.label, 0) + 1
        return counts


@dataclass(frozen=True)
class _Boxes:
    """COUNT and BOUNDING_BOX: answers are :class:`DetectionResult` counts and boxes."""

    detector: DetectorInfo
    settings: WorkerSettings
    threads: int

    def select(self, dataset: Sequence[DatasetExample]) -> DatasetSelection:
        selection = select_boxed(dataset, self.detector.mode)
        settings = self.settings
        check_boxes_trainable(
            selection, self.detector.mode, settings.min_detection_images, settings.min_detection_objects
        )
        return selection

    def out_of_fold(self, final: TrainedVersion) -> Mapping[str, DetectionResult]:
        return final.out_of_fold_boxes

    def measure(
        self, images: Sequence[LabeledImage], answers: Sequence[DetectionResult], files: ModelFiles
    ) -> BoxMetrics:
        spec = files.primary_config.detection
        if spec is None:
            raise ModelError("the version is not a detection model: it cannot answer counts or boxes")
        return measure_boxes(
            images,
            answers,
            mode=self.detector.mode,
            class_name=self.detector.class_names[0],
            spec=spec,
            threshold=self.detector.confidence_threshold,
        )

    def scorer(self, files: ModelFiles) -> Callable[[LabeledImage], DetectionResult]:
        scorer = BoxScorer(files, self.threads)
        return lambda image: scorer.result(image.image)

    def kind(self, image: LabeledImage) -> str:
        return kind(image)

    def counts(self, images: Sequence[LabeledImage]) -> dict[str, int]:
        objects = sum(len(image.boxes) for image in images)
        empty = sum(1 for image in images if not image.boxes)
        return {"images": len(images), "objects": objects, "empty_images": empty}


@dataclass(frozen=True)
class _GoodImages(_Classes):
    """A BINARY anomaly model: trained from the NO images; any YES images only measure it."""

    def select(self, dataset: Sequence[DatasetExample]) -> DatasetSelection:
        selection = select_examples(dataset, self.detector.mode, self.detector.class_names)  # RGB: depth unused
        good = sum(1 for example in selection.examples if example.label == "NO")
        least = max(self.settings.min_per_class, MIN_GOOD_IMAGES)
        if good < least:
            raise DatasetError(
                f"Not enough good images to train an anomaly model: it needs at least {least} NO labels (have {good})."
            )
        return selection


def resolve_trainer(
    detector: DetectorInfo, trainer: str, dataset: Sequence[DatasetExample], settings: WorkerSettings
) -> str:
    """The trainer a job runs: ``auto`` on a BINARY detector with enough good (NO) labels
    but too few YES labels for a classifier trains an anomaly model from the good images
    (a new line's first useful answers); once both classes have enough, the classifier
    trains, and promotion keeps whichever measures better on the same images."""
    if trainer == ANOMALY and detector.mode != "BINARY":
        raise DatasetError(f"Anomaly models answer YES / NO: a {detector.mode} detector cannot train one.")
    if trainer != "auto" or detector.mode != "BINARY":
        return trainer
    labels = [example.label for example in select_examples(dataset, detector.mode, detector.class_names).examples]
    good, defects = labels.count("NO"), labels.count("YES")
    if defects < settings.min_per_class and good >= max(settings.min_good_images, MIN_GOOD_IMAGES):
        return ANOMALY
    return trainer


def _judge(detector: DetectorInfo, settings: WorkerSettings, threads: int, *, anomaly: bool = False) -> _Judge:
    if detector.mode in DETECTION_MODES:
        return _Boxes(detector, settings, threads)
    if anomaly:
        return _GoodImages(detector, settings, threads)
    return _Classes(detector, settings, threads)
