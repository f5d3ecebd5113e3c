"""The cloud API (and the retraining worker) as real processes for edge/loop tests, plus a
small admin client for what a test does as a person: tokens, review, counting queries.

The data directory is the caller's, so a stopped cloud restarts with its data (SQLite,
blobs), as a real one would after an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import ManagedProcess, free_port, python_module, wait_http

CLOUD_BOOTSTRAP_TOKEN = "cloudbootstraptoken0_abcdefghijklmnop"


@dataclass
class CloudProcess:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.process.start()
        wait_http(f"{self.url}/health/live", timeout=timeout, process=self.process)

    def stop(self) -> None:
        self.process.stop()


def cloud_process(
    data_dir: Path, log_dir: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None
) -> CloudProcess:
    """``python -m intellioptics_cloud`` on a free port with SQLite and blobs under ``data_dir``."""
    port = port or free_port()
    env = {
        "INTELLIOPTICS_ENVIRONMENT": "test",
        "INTELLIOPTICS_LOG_LEVEL": "WARNING",
        "INTELLIOPTICS_DATA_DIR": str(data_dir),
        "INTELLIOPTICS_BOOTSTRAP_TOKEN": CLOUD_BOOTSTRAP_TOKEN,
        "INTELLIOPTICS_CLOUD_HOST": "127.0.0.1",
        "INTELLIOPTICS_CLOUD_PORT": str(port),
        **(extra_env or {}),
    }
    return CloudProcess(python_module("cloud", "intellioptics_cloud", log_dir, env), port)


def worker_process(cloud_url: str, token: str, log_dir: Path, work_dir: Path, **env: str) -> ManagedProcess:
    """``python -m intellioptics_worker`` polling ``cloud_url``."""
    return python_module(
        "worker",
        "intellioptics_worker",
        log_dir,
        {
            "INTELLIOPTICS_ENVIRONMENT": "test",
            "INTELLIOPTICS_LOG_LEVEL": "INFO",
            "INTELLIOPTICS_CLOUD_URL": cloud_url,
            "INTELLIOPTICS_WORKER_TOKEN": token,
            "INTELLIOPTICS_WORK_DIR": str(work_dir),
            "INTELLIOPTICS_POLL_INTERVAL_S": "0.5",
            **env,
        },
    )


class CloudAdmin:
    """Blocking calls to the cloud API as an admin (bootstrap token) or any token."""

    def __init__(self, url: str, token: str = CLOUD_BOOTSTRAP_TOKEN) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"x-api-token": token or self.token, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30.0, **kwargs)

    def create_token(self, name: str, role: str) -> str:
        response = self.request("POST", "/v1/tokens", json={"name": name, "role": role})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def image_queries(self, detector_id: str) -> list[dict[str, Any]]:
        """Every image query of a detector (all pages)."""
        results: list[dict[str, Any]] = []
        page = 1
        while True:
            response = self.request(
                "GET", "/v1/image-queries", params={"detector_id": detector_id, "page": page, "page_size": 1000}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            results.extend(body["results"])
            if not body.get("next"):
                return results
            page += 1

    def review(
        self, detector_id: str, label_for: Callable[[dict[str, Any]], str], *, token: str | None = None
    ) -> list[tuple[str, str]]:
        """Claim and label the detector's pending items until none is left; ``label_for``
        gets the review item. Returns (image_query_id, label) pairs."""
        labelled: list[tuple[str, str]] = []
        while True:
            response = self.request(
                "POST", "/v1/review/claim", token=token, params={"detector_id": detector_id, "ahead": "true"}
            )
            if response.status_code == 204:
                return labelled
            assert response.status_code == 200, response.text
            item = response.json()
            label = label_for(item)
            answer = self.request("POST", f"/v1/review/items/{item['id']}/label", token=token, json={"label": label})
            assert answer.status_code == 200, answer.text
            labelled.append((item["image_query_id"], label))

    def wait(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(interval)
