"""The decision tree of ``POST image-queries``: answer here, escalate, or hand to the cloud.

It follows Groundlight's edge (reference/groundlight.md §2) and goes beyond it:

1. the detector must be known (edge-config or cloud: else 404, which nginx forwards to
   the cloud) and enabled (``enabled: false`` → 403);
2. ``want_async`` and ``human_review=ALWAYS`` need the cloud: forwarded there; when the
   cloud is absent or unreachable, the edge model answers, the query goes to the outbox
   and the answer says ``done_processing: false``. (With ``disable_cloud_escalation``,
   ``want_async`` is answered by the edge and ``human_review=ALWAYS`` is a 400.)
   A caller with one of the edge's own tokens is forwarded with the device token, as
   its escalations are delivered: the cloud would refuse a token it never issued.
3. the detector's rule stage (``rules:`` in edge-config, :mod:`intellioptics_edge.rules`)
   runs first, its depth checks on the query's depth map: a sure check answers (or marks
   the image unusable and escalates it) and the model does not run; otherwise the model
   answers and the answer says ``hybrid``;
   no ready model → the cloud, or 503 when escalation is disabled or no cloud can take it;
4. confident (adjusted confidence ≥ threshold) or ``always_return_edge_prediction`` →
   the edge answers (``source=ALGORITHM``, ``from_edge=true``); confident answers are
   sampled for audit at ``confident_audit_rate``; an unconfident answer is escalated
   (at most once per ``min_time_between_escalations`` per detector) and says
   ``done_processing: false`` when it was;
5. not confident and escalation allowed → escalation queued in the durable outbox
   (delivered by the cloud sync), answer with ``done_processing: false``. While
   escalations fill the outbox (``outbox_max_items``/``_bytes``) such a query is refused
   with 503 + Retry-After rather than answered with an escalation that could be lost;
   audits are then skipped.

Exactly once: the edge gives a query its ``image_query_id`` before anything is sent, so
a query forwarded to a slow cloud (read timeout) and then answered here goes to the
outbox under the same id, and the cloud treats the second arrival as the first. A query
that gets 503 because neither the cloud nor an edge model answered may still have been
stored by the cloud: the 503 names its id, and a retry with that ``image_query_id``
gets the stored query instead of a second one.

A depth map sent with the image is checked before anything else happens (400 when it is
unusable), read by the rule stage and sent to the inference service with the image; a
model trained with depth refuses an image without one (400 ``depth_required``). What is
forwarded to the cloud or queued for it carries the depth map too, as it was sent.

Every edge answer is stored with its image so that ``GET image-queries/{id}`` and
``/image`` work here, with ``metadata``, ``inspection_id`` and ``image_query_id`` kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio

from intellioptics_common.anomaly import OVERLAY_KINDS, Severity, overlay_png
from intellioptics_common.confidence import is_confident, normalize_binary_label
from intellioptics_common.depth import checked_depth
from intellioptics_common.errors import IntelliOpticsError, InvalidInputError
from intellioptics_common.explanation import explain_edge_answer
from intellioptics_common.ids import new_id
from intellioptics_common.imaging import ImageLimits
from intellioptics_common.results import result_model, result_payload
from intellioptics_common.schemas import (
    RESULT_TYPE_BY_MODE,
    SUPPORTED_MODES,
    AnomalySummary,
    BatchItem,
    BatchResult,
    BatchSummary,
    DetectorMode,
    EdgeImageQuery,
    EscalationReason,
    HumanReview,
    InferenceResult,
    InferenceTimings,
    PipelineReport,
    Source,
)
from intellioptics_edge.cloud import CloudClient, CloudResponse, CloudUnreachable
from intellioptics_edge.detectors import DetectorDirectory, DetectorInfo
from intellioptics_edge.edge_config import EdgeConfig, EdgeConfigManager, InferenceConfig
from intellioptics_edge.errors import (
    CloudUnavailableError,
    DetectorDisabledError,
    DetectorNotFoundError,
    DuplicateImageQueryError,
    ImageQueryNotFoundError,
    ModelNotReadyError,
    OutboxFullError,
)
from intellioptics_edge.images import probe_image
from intellioptics_edge.inference_client import InferenceClient, NotReady
from intellioptics_edge.outbox_store import OutboxEntry, OutboxKind
from intellioptics_edge.rules import RuleEngine, RuleOutcome
from intellioptics_edge.spending import EscalationGate, HeldBack, difference_hash
from intellioptics_edge.stats import EdgeStats, Outcome
from intellioptics_edge.store import QueryStore, StoredImage

logger = logging.getLogger(__name__)
UNKNOWN_DETECTOR = "unknown"


@dataclass(frozen=True)
class SubmitRequest:
    detector_id: str
    image: bytes
    content_type: str
    token: str
    depth: bytes | None = None  # 16-bit PNG or float32 .npy, mm (intellioptics_common.depth)
    confidence_threshold: float | None = None
    patience_time: float | None = None
    human_review: HumanReview | None = None
    want_async: bool = False
    metadata: dict[str, Any] | None = None
    inspection_id: str | None = None
    image_query_id: str | None = None
    # ``token`` is one of this edge's own (INTELLIOPTICS_EDGE_TOKENS), perhaps unknown to the cloud.
    local_caller: bool = False
    # The query string as received, forwarded unchanged when the cloud answers.
    forward_params: dict[str, str] = field(default_factory=dict)
    # The model's answer when it was already asked (one image for several detectors).
    inference: InferenceResult | NotReady | IntelliOpticsError | None = None


@dataclass(frozen=True)
class EdgeAnswer:
    image_query: EdgeImageQuery
    body: str  # ``image_query`` as JSON, serialised once for the store and the response
    held_back: str | None = None  # why an unsure answer was not escalated (intellioptics_edge.spending)


SubmitOutcome = EdgeAnswer | CloudResponse


class ImageQueryService:
    def __init__(
        self,
        *,
        config: EdgeConfigManager,
        detectors: DetectorDirectory,
        inference: InferenceClient,
        cloud: CloudClient | None,
        store: QueryStore,
        stats: EdgeStats,
        limits: ImageLimits,
        random_source: Callable[[], float] = random.random,
        answer_timeout_s: float | None = None,
        device_token: str | None = None,
        outbox_full: Callable[[], bool] = lambda: False,
    ) -> None:
        self._config = config
        self._detectors = detectors
        self._inference = inference
        self._cloud = cloud
        self._store = store
        self._stats = stats
        self._limits = limits
        self._random = random_source
        self._answer_timeout_s = answer_timeout_s
        self._device_token = device_token
        self._outbox_full = outbox_full
        self._last_escalation: dict[str, float] = {}
        self._rules = RuleEngine()
        self._gate = EscalationGate()

    async def submit(self, request: SubmitRequest) -> SubmitOutcome:
        started = time.perf_counter()
        try:
            outcome, answer, inference, confident, method = await self._decide(request)
        except DetectorNotFoundError:
            # One bucket for every unknown id: callers must not be able to grow the
            # status page or the metrics' label set at will.
            self._stats.record(UNKNOWN_DETECTOR, Outcome.REFUSED, time.perf_counter() - started)
            raise
        except Exception:
            self._stats.record(request.detector_id, Outcome.REFUSED, time.perf_counter() - started)
            raise
        self._stats.record(
            request.detector_id,
            outcome,
            time.perf_counter() - started,
            confident=confident,
            inference=inference,
            method=method,
            held_back=answer.held_back if isinstance(answer, EdgeAnswer) else None,
        )
        return answer

    async def submit_many(self, requests: list[SubmitRequest]) -> list[SubmitOutcome | IntelliOpticsError]:
        """One image for several detectors, each through the whole decision tree (rules,
        escalation, audit, outbox, the record), with one model call for all of them: the
        inference service decodes the image once and runs a backbone they share once. A
        detector's refusal takes its place in the answers; the others go on."""
        if not requests:
            return []
        first = requests[0]
        probe_image(first.image, self._limits)  # a bad image fails them all, before any model runs
        asked: list[str] = []
        for request in requests:
            try:
                detector = await self._detectors.get(request.detector_id, request.token)
            except IntelliOpticsError:
                continue  # its own submit raises the same error
            if detector.mode in SUPPORTED_MODES and request.depth is None:
                asked.append(detector.id)
        answers = await self._inference.infer_many(asked, first.image, first.content_type) if len(asked) > 1 else {}

        async def one(request: SubmitRequest) -> SubmitOutcome | IntelliOpticsError:
            try:
                return await self.submit(replace(request, inference=answers.get(request.detector_id)))
            except IntelliOpticsError as exc:
                return exc

        return list(await asyncio.gather(*(one(request) for request in requests)))

    async def _decide(
        self, request: SubmitRequest
    ) -> tuple[Outcome, SubmitOutcome, InferenceResult | None, bool, str | None]:
        detector = await self._detectors.get(request.detector_id, request.token)
        config = self._config.current()
        entry = config.entry(detector.id)
        preset = entry.edge_inference_config if entry else "default"
        settings = config.inference_config_for(detector.id)
        if not settings.enabled:
            raise DetectorDisabledError(
                f"Detector {detector.id} is disabled on this edge (edge-config uses '{preset}', which has "
                "enabled: false). Change its edge_inference_config to accept image queries."
            )
        header = probe_image(request.image, self._limits)
        depth_mm = None
        if request.depth is not None:
            depth_mm = await anyio.to_thread.run_sync(checked_depth, request.depth, (header.width, header.height))
        stored = (
            await anyio.to_thread.run_sync(self._store.get, request.image_query_id) if request.image_query_id else None
        )
        if stored is not None:
            raise DuplicateImageQueryError(f"image_query_id {request.image_query_id} was already used on this edge.")
        if not request.image_query_id:
            # The id comes first, so whatever path the query takes (forwarded, retried by
            # the outbox, answered here) the cloud sees one id and stores one query.
            iq_id = new_id("iq")
            request = replace(
                request, image_query_id=iq_id, forward_params={**request.forward_params, "image_query_id": iq_id}
            )
        threshold = request.confidence_threshold
        threshold = detector.confidence_threshold if threshold is None else threshold

        wants_cloud = request.want_async or request.human_review == HumanReview.ALWAYS.value
        if wants_cloud and settings.disable_cloud_escalation:
            if request.human_review == HumanReview.ALWAYS.value:
                raise InvalidInputError(
                    f"human_review=ALWAYS needs the cloud, but detector {detector.id} is configured with "
                    f"disable_cloud_escalation ('{preset}'); leave human_review unset or use another config."
                )
            wants_cloud = False  # want_async on a cloud-less detector: the edge answers at once

        if wants_cloud:
            forwarded = await self._try_cloud(request)
            if forwarded is not None:
                return Outcome.CLOUD, forwarded, None, False, None
            result = await self._infer(detector, request)
            if isinstance(result, NotReady):
                raise CloudUnavailableError(
                    f"This query needs the cloud (want_async or human_review=ALWAYS), which is "
                    f"{self._cloud_state()}, and no edge model could answer: {result.reason}."
                    f"{self._maybe_stored(request)}"
                )
            if self._outbox_full():
                self._refuse_when_full(True)
            always = request.human_review == HumanReview.ALWAYS.value
            reason = EscalationReason.HUMAN_REVIEW_ALWAYS if always else None
            answer = await self._answer(detector, request, result, threshold, escalate=True, audit=False, reason=reason)
            return Outcome.ESCALATED, answer, result, is_confident(result.confidence, threshold), "ml"

        rules = entry.rules if entry is not None else []
        pipeline = PipelineReport(method="ml")
        if rules:
            checked: RuleOutcome = await anyio.to_thread.run_sync(self._rules.evaluate, rules, request.image, depth_mm)
            verdict = checked.verdict
            if verdict is not None and (verdict.escalate or is_confident(verdict.confidence, threshold)):
                return await self._rule_answer(detector, request, checked, threshold, settings, config)
            pipeline = PipelineReport(method="hybrid", rules_ms=checked.elapsed_ms)

        result = await self._infer(detector, request)
        if isinstance(result, NotReady):
            if settings.disable_cloud_escalation:
                raise ModelNotReadyError(
                    f"No model is ready for detector {detector.id} ({result.reason}) and its edge config "
                    f"'{preset}' disables cloud escalation. Try again once the model is loaded."
                )
            forwarded = await self._try_cloud(request)
            if forwarded is None:
                raise CloudUnavailableError(
                    f"No model is ready for detector {detector.id} ({result.reason}) and the cloud is "
                    f"{self._cloud_state()}. Try again once the model is loaded.{self._maybe_stored(request)}"
                )
            return Outcome.CLOUD, forwarded, None, False, None

        confident = is_confident(result.confidence, threshold)
        if confident or settings.always_return_edge_prediction:
            escalate = audit = False
            if not settings.disable_cloud_escalation:
                if confident:
                    audit = self._random() < config.global_config.confident_audit_rate
                else:
                    escalate = self._escalation_due(detector.id, settings.min_time_between_escalations)
        else:
            escalate, audit = True, False
        held = await self._hold_back(detector.id, request, settings) if escalate else None
        if held is not None:
            escalate = False  # the edge model's answer stands: a person would learn nothing new
        if self._outbox_full():
            self._refuse_when_full(escalate)
            audit = False
        reason = EscalationReason.AUDIT if audit else _low_confidence_reason(result) if escalate else None
        answer = await self._answer(
            detector,
            request,
            result,
            threshold,
            escalate=escalate,
            audit=audit,
            reason=reason,
            pipeline=pipeline,
            held_back=held,
        )
        outcome = Outcome.ESCALATED if escalate else Outcome.AUDITED if audit else Outcome.EDGE
        return outcome, answer, result, confident, pipeline.method

    async def _rule_answer(
        self,
        detector: DetectorInfo,
        request: SubmitRequest,
        checked: RuleOutcome,
        threshold: float,
        settings: InferenceConfig,
        config: EdgeConfig,
    ) -> tuple[Outcome, SubmitOutcome, InferenceResult | None, bool, str | None]:
        """A sure check answered: no model run. Unusable images escalate; sure labels are audited."""
        verdict = checked.verdict
        assert verdict is not None
        result = InferenceResult(
            detector_id=detector.id,
            mode=detector.mode,
            label=verdict.label,
            confidence=verdict.confidence,
            raw_primary_confidence=verdict.confidence,
            probabilities={verdict.label: verdict.confidence},
            primary_model_version=0,
            primary_model_id=f"rules:{verdict.check}",
            timings=InferenceTimings(
                decode_ms=0.0, preprocess_ms=0.0, model_ms=verdict.elapsed_ms, total_ms=checked.elapsed_ms
            ),
        )
        escalate = verdict.escalate and not settings.disable_cloud_escalation
        audit = (
            not verdict.escalate
            and not settings.disable_cloud_escalation
            and self._random() < config.global_config.confident_audit_rate
        )
        reason = EscalationReason.UNUSABLE_IMAGE if escalate else EscalationReason.AUDIT if audit else None
        pipeline = PipelineReport(
            method="rule-based",
            check=verdict.check,
            rule_index=verdict.index,
            measured=verdict.measured,
            rules_ms=checked.elapsed_ms,
        )
        answer = await self._answer(
            detector, request, result, threshold, escalate=escalate, audit=audit, reason=reason, pipeline=pipeline
        )
        outcome = Outcome.ESCALATED if escalate else Outcome.AUDITED if audit else Outcome.EDGE
        return outcome, answer, None, not verdict.escalate, pipeline.method

    async def _hold_back(self, detector_id: str, request: SubmitRequest, settings: InferenceConfig) -> HeldBack | None:
        """A near-duplicate of a recent escalation, or the hourly budget spent: not escalated."""
        if settings.near_duplicate_window_s <= 0 and settings.max_escalations_per_hour is None:
            return None
        image_hash = None
        if settings.near_duplicate_window_s > 0:
            image_hash = await anyio.to_thread.run_sync(difference_hash, request.image)
        return self._gate.check(
            detector_id,
            request.image_query_id or "",
            image_hash,
            window_s=settings.near_duplicate_window_s,
            distance=settings.near_duplicate_distance,
            per_hour=settings.max_escalations_per_hour,
        )

    def _escalation_due(self, detector_id: str, min_interval_s: float) -> bool:
        now = time.monotonic()
        last = self._last_escalation.get(detector_id)
        if last is not None and now - last < min_interval_s:
            return False
        self._last_escalation[detector_id] = now
        return True

    @staticmethod
    def _refuse_when_full(escalate: bool) -> None:
        if escalate:
            raise OutboxFullError(
                "This query would be escalated, but the edge's outbox is full of escalations the cloud has not "
                "taken yet (see /status). Retry later; nothing was stored.",
                retry_after_s=30,
            )

    def _maybe_stored(self, request: SubmitRequest) -> str:
        if self._cloud is None:
            return ""
        return (
            f" It was sent as image_query_id={request.image_query_id} and the cloud may have stored it: "
            "retry with that image_query_id to get that query rather than a second one."
        )

    def _cloud_state(self) -> str:
        return "not configured (offline mode)" if self._cloud is None else "unreachable"

    async def _infer(self, detector: DetectorInfo, request: SubmitRequest) -> InferenceResult | NotReady:
        if detector.mode not in SUPPORTED_MODES:
            return NotReady(f"{detector.mode.value} detectors are answered by the cloud only")
        asked = request.inference
        if isinstance(asked, IntelliOpticsError):
            raise asked
        if asked is not None:
            return asked
        return await self._inference.infer(detector.id, request.image, request.content_type, request.depth)

    async def _try_cloud(self, request: SubmitRequest) -> CloudResponse | None:
        if self._cloud is None:
            return None
        # Without a device token a local caller's own token is tried: it may be a cloud
        # token that the operator also listed locally.
        token = self._device_token if request.local_caller and self._device_token else request.token
        try:
            return await self._cloud.submit_image_query(
                request.forward_params, request.image, request.content_type, token, depth=request.depth
            )
        except CloudUnreachable as exc:
            logger.warning("cloud unreachable for detector %s: %s", request.detector_id, exc)
            return None

    async def _answer(
        self,
        detector: DetectorInfo,
        request: SubmitRequest,
        result: InferenceResult,
        threshold: float,
        *,
        escalate: bool,
        audit: bool,
        reason: EscalationReason | None = None,
        pipeline: PipelineReport | None = None,
        held_back: HeldBack | None = None,
    ) -> EdgeAnswer:
        image_query = build_edge_image_query(
            detector=detector,
            result=result,
            image_query_id=request.image_query_id or new_id("iq"),
            threshold=threshold,
            patience_time=detector.patience_time if request.patience_time is None else request.patience_time,
            metadata=request.metadata,
            done_processing=not escalate,
            pipeline=pipeline,
        )
        outbox: list[OutboxEntry] = []
        if escalate or audit:
            request_metadata = {
                "escalation_reason": None if reason is None else reason.value,
                "metadata": request.metadata,
                "inspection_id": request.inspection_id,
                "confidence_threshold": threshold,
                "patience_time": image_query.patience_time,
                "human_review": request.human_review,
                "want_async": request.want_async,
            }
            kind = OutboxKind.ESCALATION if escalate else OutboxKind.AUDIT
            outbox.append(OutboxEntry(kind, result.model_dump(mode="json"), request_metadata))
        body = image_query.model_dump_json()
        explanation = explain_edge_answer(
            image_query_id=image_query.id,
            result=result,
            threshold=threshold,
            escalated=escalate,
            reason=reason,
            held_back=None if held_back is None else (held_back.reason, held_back.detail),
        )
        saved = await anyio.to_thread.run_sync(
            partial(
                self._store.save,
                image_query_id=image_query.id,
                detector_id=detector.id,
                done_processing=image_query.done_processing,
                body=body,
                image=request.image,
                content_type=request.content_type,
                inspection_id=request.inspection_id,
                outbox=outbox,
                explanation=explanation.model_dump_json(),
                depth=request.depth,
            )
        )
        if not saved:
            raise DuplicateImageQueryError(f"image_query_id {image_query.id} was already used on this edge.")
        return EdgeAnswer(image_query, body, None if held_back is None else held_back.reason)

    async def get(self, image_query_id: str, token: str) -> str | CloudResponse:
        """The stored answer (JSON), or the cloud's newer one for a query still in progress.

        An escalated query asks the cloud (short timeout: the caller is polling and the
        edge's answer is a fine answer meanwhile); once the cloud's answer is final (a
        person labelled it, or the cloud's model was confident) it replaces the stored
        one, so later reads need no cloud. The edge asks with its device token when it
        has one: the outbox delivered the query with it, so the cloud files it under the
        edge's account, whatever local token the caller used.
        """
        stored = await anyio.to_thread.run_sync(self._store.get, image_query_id)
        if stored is None:
            raise ImageQueryNotFoundError(f"Image query {image_query_id} was not answered by this edge.")
        if not stored.done_processing and self._cloud is not None:
            try:
                response = await self._cloud.get_image_query(
                    image_query_id, self._device_token or token, self._answer_timeout_s
                )
            except CloudUnreachable:
                return stored.body
            # 404: the escalation is still in the outbox; the edge's answer stands for now.
            if response.status_code == 200 and isinstance(response.body, dict):
                if response.body.get("done_processing") is True and response.body.get("id") == image_query_id:
                    await anyio.to_thread.run_sync(self._store.finish, image_query_id, json.dumps(response.body))
                return response
        return stored.body

    async def overlay(self, image_query_id: str, kind: str) -> bytes:
        """A PNG of the anomaly map (``heatmap``), its thresholded ``mask`` or the ``boxes``
        over the stored image. The map is not stored: the model runs again on the image
        (deterministic for a model version, and it keeps every stored answer small)."""
        if kind not in OVERLAY_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(OVERLAY_KINDS)}, not {kind!r}.")
        stored = await anyio.to_thread.run_sync(self._store.get, image_query_id)
        image = await anyio.to_thread.run_sync(self._store.image, image_query_id)
        if stored is None or image is None:
            raise ImageQueryNotFoundError(f"Image query {image_query_id} was not answered by this edge.")
        detector_id = json.loads(stored.body)["detector_id"]
        result = await self._inference.infer(detector_id, image.data, image.content_type)
        if isinstance(result, NotReady):
            raise ModelNotReadyError(f"The model of detector {detector_id} is not ready on this edge: {result.reason}")
        if result.anomaly is None or result.anomaly.map is None:
            raise InvalidInputError(
                f"Detector {detector_id} is not an anomaly detector here; overlays exist only for anomaly models."
            )
        return await anyio.to_thread.run_sync(partial(overlay_png, image.data, result.anomaly, kind))

    async def batch(self, detector_id: str, token: str, images: list[tuple[str, bytes, str]]) -> BatchResult:
        """Answer several images of one detector from the edge model, without storing or
        escalating them (an inspection run, not image queries). A bad image fails alone."""
        detector = await self._detectors.get(detector_id, token)
        items = []
        for filename, data, content_type in images:
            started = time.perf_counter()
            try:
                probe_image(data, self._limits)
                result = await self._inference.infer(detector.id, data, content_type)
            except InvalidInputError as exc:
                items.append(BatchItem(filename=filename, error=exc.public_message))
                continue
            if isinstance(result, NotReady):
                raise ModelNotReadyError(f"No model is ready for detector {detector.id} on this edge: {result.reason}")
            anomaly = result.anomaly
            boxes = anomaly.rois if anomaly is not None else result.detection.rois if result.detection else []
            items.append(
                BatchItem(
                    filename=filename,
                    label=result.label,
                    confidence=result.confidence,
                    anomaly_score=None if anomaly is None else anomaly.anomaly_score,
                    severity=None if anomaly is None else anomaly.severity,
                    rois=boxes,
                    ms=round(1000.0 * (time.perf_counter() - started), 2),
                )
            )
        return BatchResult(detector_id=detector.id, results=items, summary=summarise_batch(items))

    async def explanation(self, image_query_id: str) -> str:
        """The stored explanation JSON of a query this edge answered. Not answered here:
        404, so the gateway asks the cloud (whose queries the cloud explains)."""
        stored, explanation = await anyio.to_thread.run_sync(self._store.explanation, image_query_id)
        if not stored:
            raise ImageQueryNotFoundError(f"Image query {image_query_id} was not answered by this edge.")
        if explanation is None:
            raise ImageQueryNotFoundError(
                f"Image query {image_query_id} was answered before this edge recorded explanations; none is kept."
            )
        return explanation

    async def image(self, image_query_id: str) -> StoredImage:
        image = await anyio.to_thread.run_sync(self._store.image, image_query_id)
        if image is None:
            raise ImageQueryNotFoundError(f"Image query {image_query_id} was not answered by this edge.")
        return image


def summarise_batch(items: list[BatchItem]) -> BatchSummary:
    answered = [item for item in items if item.error is None]
    per_severity = {grade.value: 0 for grade in Severity}
    for item in answered:
        if item.severity is not None:
            per_severity[item.severity] = per_severity.get(item.severity, 0) + 1
    times = [item.ms for item in answered if item.ms is not None]
    return BatchSummary(
        total=len(items),
        answered=len(answered),
        flagged=sum(item.label == "YES" for item in answered),
        per_severity=per_severity,
        mean_ms=round(sum(times) / len(times), 2) if times else None,
        errors=len(items) - len(answered),
    )


def _low_confidence_reason(result: InferenceResult) -> EscalationReason:
    """OUT_OF_DOMAIN when the OODD model finds the image foreign, else LOW_CONFIDENCE."""
    foreign = result.oodd_in_domain_score is not None and result.oodd_in_domain_score < 0.5
    return EscalationReason.OUT_OF_DOMAIN if foreign else EscalationReason.LOW_CONFIDENCE


def build_edge_image_query(
    *,
    detector: DetectorInfo,
    result: InferenceResult,
    image_query_id: str,
    threshold: float,
    patience_time: float,
    metadata: dict[str, Any] | None,
    done_processing: bool,
    pipeline: PipelineReport | None = None,
) -> EdgeImageQuery:
    confidence = min(max(result.confidence, 0.0), 1.0)
    label = normalize_binary_label(result.label).value if detector.mode is DetectorMode.BINARY else result.label
    found = result.detection
    answer = result_payload(
        detector.mode.value,
        label,
        confidence,
        Source.ALGORITHM.value,
        True,
        count=None if found is None else found.count,
        greater_than_max=found is not None and found.greater_than_max,
    )
    anomaly = result.anomaly
    rois = anomaly.rois if anomaly is not None else found.rois if found is not None else None
    return EdgeImageQuery(
        id=image_query_id,
        created_at=datetime.now(UTC),
        query=detector.query,
        detector_id=detector.id,
        result_type=RESULT_TYPE_BY_MODE[detector.mode],
        result=result_model(answer),
        patience_time=patience_time,
        confidence_threshold=threshold,
        metadata=metadata,
        done_processing=done_processing,
        pipeline=pipeline,
        rois=rois,
        anomaly=None
        if anomaly is None
        else AnomalySummary(anomaly_score=anomaly.anomaly_score, severity=anomaly.severity),
    )
