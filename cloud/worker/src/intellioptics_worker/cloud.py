"""The worker's only way to the cloud: its HTTP API, with a worker (or admin) token.

Every call retries network errors and 5xx answers with capped exponential backoff (a
training job is minutes of work: a cloud restart in the middle must not waste it); a 4xx
is the cloud saying no and is raised at once as :class:`CloudError`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from intellioptics_common.errors import IntelliOpticsError
from intellioptics_common.model_check import check_model_bytes
from intellioptics_common.schemas import DETECTION_MODES, max_objects
from intellioptics_worker.errors import CloudError, CloudUnavailableError, JobCancelled, ModelError

logger = logging.getLogger(__name__)

_BACKOFF_CAP_S = 8.0
_UPLOAD_CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Job:
    id: str
    detector_id: str
    trainer: str
    trigger: str
    attempts: int
    status: str

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            id=str(data["id"]),
            detector_id=str(data["detector_id"]),
            trainer=str(data.get("trainer") or "auto"),
            trigger=str(data.get("trigger") or "manual"),
            attempts=int(data.get("attempts") or 0),
            status=str(data.get("status") or "running"),
        )


@dataclass(frozen=True)
class DetectorInfo:
    id: str
    mode: str
    class_names: tuple[str, ...]
    confidence_threshold: float
    promotion_policy: str
    max_objects: int | None = None  # COUNT: max_count; BOUNDING_BOX: max_num_bboxes


# One labeled box as image fractions: left, top, right, bottom.
Corners = tuple[float, float, float, float]


@dataclass(frozen=True)
class DatasetExample:
    image_query_id: str
    label: str
    source: str
    image_url: str
    rois: tuple[Corners, ...] | None = None  # a COUNT / BOUNDING_BOX label's boxes
    depth_url: str | None = None  # the depth map sent with the image (as sent); None: it has none


@dataclass(frozen=True)
class ModelVersionInfo:
    version: int
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_image_query_ids: tuple[str, ...] | None = None
    primary_sha256: str | None = None


@dataclass(frozen=True)
class VersionConfigs:
    """The pipeline configs of one registered version (needed to run its binaries)."""

    primary: dict[str, Any]
    oodd: dict[str, Any] | None


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None


@dataclass(frozen=True)
class Registration:
    """Everything one atomic ``POST /v1/detectors/{id}/models`` carries."""

    primary_model: bytes
    oodd_model: bytes | None
    manifest: dict[str, Any]


class CloudClient:
    """Typed calls of the worker-facing cloud API. ``transport`` lets unit tests use
    ``httpx.MockTransport``; ``sleep`` lets them skip the backoff."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 60.0,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"x-api-token": token, "user-agent": "intellioptics-worker"},
            timeout=timeout_s,
            transport=transport,
        )
        self._retries = retries
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- training jobs --------------------------------------------------------------

    def claim_job(self) -> Job | None:
        response = self._request("POST", "/v1/training-jobs/claim")
        return None if response.status_code == 204 else Job.from_wire(response.json())

    def report_progress(
        self, job_id: str, progress: float, eta_s: float | None, message: str | None, epoch: EpochReport | None = None
    ) -> None:
        """Post progress (which also renews the lease); raise :class:`JobCancelled` when the
        cloud says the job was cancelled, or that it is no longer ours."""
        body: dict[str, Any] = {"progress": min(max(progress, 0.0), 1.0), "message": message}
        if eta_s is not None:
            body["eta_s"] = max(eta_s, 0.0)
        if epoch is not None:
            body["epoch"] = {k: v for k, v in vars(epoch).items() if v is not None}
        try:
            response = self._request("POST", f"/v1/training-jobs/{job_id}/progress", json=body)
        except CloudError as exc:
            # 409: the job is no longer running under our claim (cancelled, or the lease
            # expired and another worker has it). Either way: stop, report nothing more.
            if exc.http_status == 409:
                raise JobCancelled(f"job {job_id} is no longer ours: {exc.public_message}") from exc
            raise
        if response.content and response.json().get("status") == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled")

    def complete_job(self, job_id: str, *, model_version: int | None = None, error: str | None = None) -> None:
        body: dict[str, Any] = {"model_version": model_version} if error is None else {"error": error[:10_000]}
        self._request("POST", f"/v1/training-jobs/{job_id}/complete", json=body)

    # --- detectors and data ---------------------------------------------------------

    def get_detector(self, detector_id: str) -> DetectorInfo:
        data = self._request("GET", f"/v1/detectors/{detector_id}").json()
        mode = str(data.get("mode") or "BINARY")
        config = data.get("mode_configuration") or {}
        detection = mode in DETECTION_MODES
        if mode == "BINARY":
            class_names: tuple[str, ...] = ("NO", "YES")
        elif detection:
            class_names = (str(config.get("class_name") or "object"),)
        else:
            class_names = tuple(str(c) for c in config.get("class_names") or ())
        policy = str(data.get("promotion_policy") or self._promotion_policy(detector_id))
        return DetectorInfo(
            id=str(data["id"]),
            mode=mode,
            class_names=class_names,
            confidence_threshold=float(data.get("confidence_threshold", 0.9)),
            promotion_policy=policy,
            max_objects=max_objects(mode, config) if detection else None,
        )

    def _promotion_policy(self, detector_id: str) -> str:
        try:
            response = self._request("GET", f"/v1/detectors/{detector_id}/settings")
        except CloudError as exc:
            if exc.http_status not in (404, 405):
                raise
            # A cloud without a readable settings route: its own default applies.
            logger.warning("detector settings are not readable (%s); using promotion policy 'auto'", exc)
            return "auto"
        return str(response.json().get("promotion_policy") or "auto")

    def get_dataset(self, detector_id: str) -> list[DatasetExample]:
        data = self._request("GET", f"/v1/detectors/{detector_id}/dataset").json()
        rows = data if isinstance(data, list) else data.get("results", data.get("items", []))
        return [
            DatasetExample(
                image_query_id=str(row["image_query_id"]),
                label=str(row["label"]),
                source=str(row.get("source") or ""),
                image_url=str(row.get("image_url") or f"/v1/image-queries/{row['image_query_id']}/image"),
                rois=_corners(row.get("rois")),
                depth_url=str(row["depth_url"]) if row.get("depth_url") else None,
            )
            for row in rows
        ]

    def get_image(self, image_url: str) -> bytes:
        """The bytes at a dataset URL: an image, or a depth map."""
        return self._request("GET", image_url).content

    # --- model registry -------------------------------------------------------------

    def list_models(self, detector_id: str) -> list[ModelVersionInfo]:
        data = self._request("GET", f"/v1/detectors/{detector_id}/models").json()
        rows = data if isinstance(data, list) else data.get("results", data.get("items", []))
        return [
            ModelVersionInfo(
                version=int(row["version"]),
                status=str(row.get("status") or ""),
                metrics=dict(row.get("metrics") or {}),
                dataset_image_query_ids=None
                if row.get("dataset_image_query_ids") is None
                else tuple(str(i) for i in row["dataset_image_query_ids"]),
                primary_sha256=row.get("primary_sha256"),
            )
            for row in rows
        ]

    def download_model(self, detector_id: str, version: int, kind: str) -> bytes:
        path = f"/v1/detectors/{detector_id}/models/{version}/download"
        return self._request("GET", path, params={"kind": kind}).content

    def get_version_configs(self, detector_id: str, version: ModelVersionInfo) -> VersionConfigs | None:
        """Pipeline configs of ``version``: from the registry's version record when it carries
        them, else from the edge model info of the active version when its sha256 matches."""
        data = self._request("GET", f"/v1/detectors/{detector_id}/models/{version.version}").json()
        if isinstance(data.get("primary_pipeline_config"), dict):
            return VersionConfigs(data["primary_pipeline_config"], data.get("oodd_pipeline_config") or None)
        info = self._request("GET", f"/edge-api/v1/fetch-model-urls/{detector_id}").json()
        if isinstance(info.get("pipeline_config"), dict) and info.get("model_binary_sha256") == version.primary_sha256:
            return VersionConfigs(info["pipeline_config"], info.get("oodd_pipeline_config") or None)
        return None

    def register_model(self, detector_id: str, registration: Registration) -> dict[str, Any]:
        """One multipart upload: the cloud stores both binaries and the version row together
        or not at all, so a worker killed before or during this call leaves nothing behind.

        The files are checked first with the cloud's own static rules (no external data,
        allowed operators, tensor sizes): a model the cloud would refuse, or that reads a
        file of this machine, is never sent."""
        _check_models(registration)
        files = {"primary": ("model.buf", registration.primary_model, "application/octet-stream")}
        if registration.oodd_model is not None:
            files["oodd"] = ("model.buf", registration.oodd_model, "application/octet-stream")
        data = {"manifest": json.dumps(registration.manifest)}
        path = f"/v1/detectors/{detector_id}/models"
        for attempt in range(1, _UPLOAD_CONFLICT_RETRIES + 1):
            try:
                # No retry on network errors: a lost response after a stored version would
                # register it twice.
                return self._request("POST", path, files=files, data=data, retry=False).json()
            except CloudError as exc:
                # 409: another version of this detector was stored at the same moment (two
                # workers finishing together); the cloud stored nothing of ours. Try again.
                if exc.http_status != 409 or attempt == _UPLOAD_CONFLICT_RETRIES:
                    raise
                logger.info("upload raced another version of %s; retrying (%d)", detector_id, attempt)
                self._sleep(random.uniform(0.05, 0.5) * attempt)
        raise AssertionError("unreachable")

    # --- plumbing -------------------------------------------------------------------

    def _request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        attempts = 1 + (self._retries if retry else 0)
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure = f"{method} {path}: {exc!r}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    raise CloudError(
                        f"cloud refused {method} {path}: HTTP {response.status_code} {_detail(response)}",
                        status_code=response.status_code,
                    )
                failure = f"{method} {path}: HTTP {response.status_code} {_detail(response)}"
            if attempt < attempts:
                logger.warning(
                    "cloud call failed (attempt %d/%d), retrying in %.1f s: %s", attempt, attempts, delay, failure
                )
                self._sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)
        raise CloudUnavailableError(f"cloud unavailable: {failure}")


def _check_models(registration: Registration) -> None:
    models = {"primary": registration.primary_model, "oodd": registration.oodd_model}
    for kind, data in models.items():
        if data is None:
            continue
        try:
            check_model_bytes(data, kind)
        except IntelliOpticsError as exc:
            raise ModelError(f"the trained {kind} model was not uploaded: {exc.public_message}") from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:200]


def _corners(rois: Any) -> tuple[Corners, ...] | None:
    """The cloud's ROI dicts (``geometry`` with left/top/right/bottom) as corner tuples."""
    if not rois:
        return None
    try:
        return tuple(
            (
                float(roi["geometry"]["left"]),
                float(roi["geometry"]["top"]),
                float(roi["geometry"]["right"]),
                float(roi["geometry"]["bottom"]),
            )
            for roi in rois
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudError(f"the cloud's dataset has a malformed ROI ({exc!r})") from exc
