"""``intellioptics jobs``: the real executable against a real cloud API process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cloud_stack import CLOUD_BOOTSTRAP_TOKEN, CloudAdmin, CloudProcess, cloud_process
from tests.support.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = Path(sys.executable).parent / "intellioptics"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    base = tmp_path_factory.mktemp("cloud")
    process = cloud_process(base / "data", base / "logs")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin(cloud: CloudProcess) -> CloudAdmin:
    return CloudAdmin(cloud.url)


@pytest.fixture
def detector_id(admin: CloudAdmin) -> str:
    response = admin.request("POST", "/v1/detectors", json={"name": os.urandom(4).hex(), "query": "Defect?"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INTELLIOPTICS_")}
    return subprocess.run(
        [str(CLI), "jobs", *args], capture_output=True, text=True, timeout=60, env={**environment, **(env or {})}
    )


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = _run(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _refused(*args: str, env: dict[str, str] | None = None) -> str:
    result = _run(*args, env=env)
    assert result.returncode != 0 and result.stdout == "", result
    assert "Traceback" not in result.stderr
    return result.stderr


def test_create_status_list_cancel(cloud: CloudProcess, admin: CloudAdmin, detector_id: str) -> None:
    flags = ["--cloud", cloud.url, "--token", CLOUD_BOOTSTRAP_TOKEN]
    created = json.loads(_ok("create", detector_id, "--trainer", "finetune", *flags, "--json"))
    assert created["detector_id"] == detector_id
    assert created["status"] == "queued" and created["trainer"] == "finetune" and created["trigger"] == "manual"
    job_id = created["id"]
    (stored,) = admin.request("GET", "/v1/training-jobs", params={"detector_id": detector_id}).json()
    assert stored["id"] == job_id and stored["trainer"] == "finetune"

    status = _ok("status", job_id, *flags)
    assert status.startswith(f"{job_id}  queued") and f"detector: {detector_id}" in status

    # The environment instead of the flags; the default trainer is the cloud's "auto".
    env = {"INTELLIOPTICS_CLOUD_URL": cloud.url, "INTELLIOPTICS_API_TOKEN": CLOUD_BOOTSTRAP_TOKEN}
    cancelled = json.loads(_ok("cancel", job_id, "--json", env=env))
    assert cancelled["status"] == "cancelled"
    second = _ok("create", detector_id, env=env)
    second_id = second.split()[0]
    assert "trainer=auto" in second and second_id != job_id

    listed = _ok("list", detector_id, env=env).splitlines()
    assert [line.split()[:2] for line in listed] == [[second_id, "queued"], [job_id, "cancelled"]]
    assert [j["id"] for j in json.loads(_ok("list", detector_id, "--json", env=env))] == [second_id, job_id]

    again = _refused("cancel", job_id, env=env)
    assert "409" in again and "only queued or running jobs can be cancelled" in again


def test_a_detector_without_jobs_lists_none(cloud: CloudProcess, detector_id: str) -> None:
    listed = _ok("list", detector_id, "--cloud", cloud.url, "--token", CLOUD_BOOTSTRAP_TOKEN)
    assert listed.strip() == f"no training jobs for {detector_id}"


def test_refusals_are_one_line_and_a_non_zero_exit(cloud: CloudProcess, admin: CloudAdmin, detector_id: str) -> None:
    flags = ["--cloud", cloud.url, "--token", CLOUD_BOOTSTRAP_TOKEN]
    assert "404, not_found" in _refused("status", "job_doesnotexist", *flags)
    assert "404, not_found" in _refused("list", "det_doesnotexist", *flags)
    assert "404, not_found" in _refused("create", "det_doesnotexist", *flags)

    wrong = _refused("list", detector_id, "--cloud", cloud.url, "--token", "io_notarealtokenatall_0123456789")
    assert "401, unauthenticated" in wrong
    reviewer = admin.create_token(f"reviewer-{os.urandom(3).hex()}", "reviewer")
    assert "403, forbidden" in _refused("create", detector_id, "--cloud", cloud.url, "--token", reviewer)
    assert _ok("list", detector_id, "--cloud", cloud.url, "--token", reviewer).startswith("no training jobs")

    missing = _refused("list", detector_id, "--token", CLOUD_BOOTSTRAP_TOKEN)
    assert "--cloud" in missing


def test_an_unreachable_cloud_is_a_clear_error() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    stderr = _refused("status", "job_x", "--cloud", nowhere, "--token", CLOUD_BOOTSTRAP_TOKEN)
    assert stderr.startswith(f"error: cannot reach the cloud API at {nowhere}")
    assert "cannot reach" in _refused("status", "job_x", "--cloud", "cloud.example", "--token", "t")
