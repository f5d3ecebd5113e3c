"""Unit-test parts for the worker: an in-memory cloud behind ``httpx.MockTransport`` (the
worker-facing routes, with the real API's status codes) and the colour trainer of
``colour_trainer.py``. The real cloud process and the real training library are used by
``test_worker_processes.py`` and ``test_worker_training.py``."""

from __future__ import annotations

import email.parser
import email.policy
import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import onnx
import pytest

from intellioptics_worker.cloud import CloudClient
from intellioptics_worker.settings import WorkerSettings
from tests.support.procs import ManagedProcess, free_port, python_module, wait_http


def load_colour_trainer() -> ModuleType:
    name = "intellioptics_worker_tests_colour_trainer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("colour_trainer.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


colour = load_colour_trainer()


class FakeCloud:
    """The worker-facing routes of the cloud API, in memory."""

    def __init__(self, mode: str = "BINARY", class_names: Sequence[str] = ("NO", "YES"), policy: str = "auto") -> None:
        self.detector = {
            "id": "det_fake0000000000000000000000",
            "mode": mode,
            "mode_configuration": None if mode == "BINARY" else {"class_names": list(class_names)},
            "confidence_threshold": 0.9,
        }
        self.policy = policy
        self.dataset: list[dict[str, Any]] = []
        self.images: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.queue: list[str] = []
        self.models: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.cancel_after_progress: int | None = None
        self.fail_next: int = 0  # answer this many requests with 503 first

    @property
    def detector_id(self) -> str:
        return str(self.detector["id"])

    def add_label(self, label: str, seed: int, image_label: str | None = None) -> str:
        iq = f"iq_{len(self.dataset):08d}fake"
        self.images[iq] = colour.color_png(image_label or label, seed)
        self.dataset.append(
            {"image_query_id": iq, "label": label, "source": "USER", "created_at": "2026-01-01T00:00:00Z",
             "image_url": f"/v1/image-queries/{iq}/image"}
        )  # fmt: skip
        return iq

    def add_job(self, trainer: str = "fast") -> str:
        job_id = f"tj_{len(self.jobs):06d}"
        self.jobs[job_id] = {"id": job_id, "detector_id": self.detector_id, "status": "queued", "trainer": trainer,
                             "trigger": "manual", "attempts": 0, "epochs": []}  # fmt: skip
        self.queue.append(job_id)
        return job_id

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> CloudClient:
        return CloudClient("http://cloud.test", "io_token", transport=self.transport(), sleep=lambda s: None)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail_next > 0:
            self.fail_next -= 1
            return httpx.Response(503, json={"detail": "down", "code": "service_unavailable"})
        assert request.headers["x-api-token"] == "io_token"
        path, method = request.url.path, request.method
        det = re.escape(self.detector_id)
        if method == "POST" and path == "/v1/training-jobs/claim":
            if not self.queue:
                return httpx.Response(204)
            job = self.jobs[self.queue.pop(0)]
            job.update(status="running", attempts=job["attempts"] + 1)
            return httpx.Response(200, json=job)
        if m := re.fullmatch(r"/v1/training-jobs/(\w+)/progress", path):
            job = self.jobs[m.group(1)]
            if job["status"] != "running":
                return httpx.Response(409, json={"detail": f"job is {job['status']}", "code": "conflict"})
            body = json.loads(request.content)
            self.progress.append(body)
            if body.get("epoch"):
                job["epochs"].append(body["epoch"])
            if self.cancel_after_progress is not None and len(self.progress) >= self.cancel_after_progress:
                job["status"] = "cancelled"
            return httpx.Response(200, json=job)
        if m := re.fullmatch(r"/v1/training-jobs/(\w+)/complete", path):
            job = self.jobs[m.group(1)]
            if job["status"] != "running":
                return httpx.Response(409, json={"detail": f"job is {job['status']}", "code": "conflict"})
            body = json.loads(request.content)
            job.update(status="failed" if body.get("error") else "succeeded", **body)
            return httpx.Response(200, json=job)
        if re.fullmatch(rf"/v1/detectors/{det}", path):
            return httpx.Response(200, json=self.detector)
        if re.fullmatch(rf"/v1/detectors/{det}/settings", path):
            return httpx.Response(200, json={"retrain_every_n_labels": 10, "promotion_policy": self.policy})
        if re.fullmatch(rf"/v1/detectors/{det}/dataset", path):
            return httpx.Response(200, json=self.dataset)
        if m := re.fullmatch(r"/v1/image-queries/(\w+)/image", path):
            return httpx.Response(200, content=self.images[m.group(1)], headers={"content-type": "image/png"})
        if re.fullmatch(rf"/v1/detectors/{det}/models", path) and method == "GET":
            return httpx.Response(200, json=[self._public(row) for row in self.models])
        if re.fullmatch(rf"/v1/detectors/{det}/models", path) and method == "POST":
            return self._upload(request)
        if m := re.fullmatch(rf"/v1/detectors/{det}/models/(\d+)", path):
            row = self.models[int(m.group(1)) - 1]
            return httpx.Response(200, json={**self._public(row), "primary_pipeline_config": row["manifest"]["primary_pipeline_config"],
                                             "oodd_pipeline_config": row["manifest"]["oodd_pipeline_config"]})  # fmt: skip
        if m := re.fullmatch(rf"/v1/detectors/{det}/models/(\d+)/download", path):
            row = self.models[int(m.group(1)) - 1]
            return httpx.Response(200, content=row[request.url.params["kind"]])
        return httpx.Response(404, json={"detail": f"no route {method} {path}", "code": "not_found"})

    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in ("primary", "oodd", "manifest")}

    def _upload(self, request: httpx.Request) -> httpx.Response:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.content
        )
        parts = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }
        manifest = json.loads(parts["manifest"])
        onnx.checker.check_model(onnx.load_from_string(parts["primary"]))
        version = len(self.models) + 1
        if manifest["activate"]:
            for row in self.models:
                if row["status"] == "active":
                    row["status"] = "retired"
        self.models.append(
            {"version": version, "status": "active" if manifest["activate"] else "candidate", "metrics": manifest["metrics"],
             "dataset_image_query_ids": manifest["dataset_image_query_ids"], "primary": parts["primary"],
             "oodd": parts.get("oodd"), "manifest": manifest}
        )  # fmt: skip
        return httpx.Response(200, json=self._public(self.models[-1]))


@pytest.fixture
def settings() -> WorkerSettings:
    return WorkerSettings(worker_token="io_token", heartbeat_s=0.05, cv_folds=3, min_per_class=3)


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def fake_cloud_class() -> type[FakeCloud]:
    return FakeCloud


@pytest.fixture
def color_trainer_class() -> type:
    return colour.ColorTrainer


@pytest.fixture
def make_png():
    return colour.color_png


# --- a real cloud API process -------------------------------------------------------

TOKEN = "io_workertestbootstraptoken0123456789"
LEASE_S = 4.0


class RealCloud:
    """A running ``python -m intellioptics_cloud`` and an admin client for it."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.log_dir = log_dir
        self.http = httpx.Client(base_url=url, headers={"x-api-token": TOKEN}, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def create_detector(self, name: str) -> str:
        body = {"name": name, "query": "Is there a defect on the surface?", "confidence_threshold": 0.9}
        detector_id = self.call("POST", "/v1/detectors", json=body).json()["id"]
        # These tests queue their own jobs: no automatic one after every 10 labels.
        self.call("POST", f"/v1/detectors/{detector_id}/settings", json={"retrain_every_n_labels": 100_000})
        return detector_id

    def label(self, detector_id: str, images: Sequence[tuple[bytes, str]]) -> list[str]:
        """Submit each image as an image query and label it through the API, as a person would."""
        ids = []
        for png, label in images:
            iq = self.call(
                "POST",
                "/v1/image-queries",
                params={"detector_id": detector_id, "want_async": "true"},
                content=png,
                headers={"content-type": "image/png"},
            ).json()["id"]
            self.call("POST", "/v1/labels", json={"image_query_id": iq, "label": label})
            ids.append(iq)
        return ids

    def create_job(self, detector_id: str, trainer: str = "fast") -> str:
        return self.call("POST", f"/v1/detectors/{detector_id}/training-jobs", json={"trainer": trainer}).json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/training-jobs/{job_id}").json()

    def models(self, detector_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/v1/detectors/{detector_id}/models").json()

    def wait_job(self, job_id: str, until: Sequence[str], timeout: float, worker: ManagedProcess | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            time.sleep(0.2)
        tail = worker.tail(60) if worker is not None else ""
        raise AssertionError(f"job {job_id} not {until} within {timeout} s: {self.job(job_id)}\n{tail}")

    def wait_progress(self, job_id: str, at_least: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.job(job_id)["progress"] < at_least:
            assert time.monotonic() < deadline, f"job {job_id} stuck: {self.job(job_id)}"
            time.sleep(0.1)

    @staticmethod
    def wait_exit(process: ManagedProcess, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        code = process.poll()
        if code is None:
            process.kill()
            raise AssertionError(f"{process.name} did not exit within {timeout} s:\n{process.tail(60)}")
        return code

    def worker_env(self, name: str) -> dict[str, str]:
        return {
            "INTELLIOPTICS_CLOUD_URL": self.url,
            "INTELLIOPTICS_WORKER_TOKEN": TOKEN,
            "INTELLIOPTICS_WORKER_ID": name,
            "INTELLIOPTICS_HEARTBEAT_S": "0.5",
            "INTELLIOPTICS_POLL_INTERVAL_S": "0.3",
            "INTELLIOPTICS_LOG_LEVEL": "INFO",
        }


@pytest.fixture(scope="module")
def real_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCloud]:
    """The cloud API on a free port, SQLite and blobs in a temp dir, a short job lease."""
    base = tmp_path_factory.mktemp("worker-cloud")
    port = free_port()
    env = {
        "INTELLIOPTICS_DATA_DIR": str(base / "data"),
        "INTELLIOPTICS_BOOTSTRAP_TOKEN": TOKEN,
        "INTELLIOPTICS_CLOUD_PORT": str(port),
        "INTELLIOPTICS_TRAINING_LEASE_S": str(LEASE_S),
        "INTELLIOPTICS_LOG_LEVEL": "WARNING",
    }
    process = python_module("cloud", "intellioptics_cloud", base, env).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=60, process=process)
        api = RealCloud(f"http://127.0.0.1:{port}", base)
        yield api
        api.http.close()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def make_png_module():
    return colour.color_png
