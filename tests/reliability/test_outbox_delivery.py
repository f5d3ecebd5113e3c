"""Escalations the cloud refuses or answers slowly (issue 11, findings 3 and 4), with real
processes: the cloud API (SQLite, or a real PostgreSQL that the test stalls), the edge's
inference service, edge API and nginx, and the real ``groundlight`` SDK as the client.

- A detector OFF in the cloud (409 ``detector_off``) holds its escalations pending, retried
  with the backoff; turned ON again, every one arrives, once.
- What the cloud refuses for good (here 413: over its image limit) is a dead letter, seen
  on ``/status``, ``/metrics`` and ``/edge-outbox/dead-letters``, discarded with a reason
  or re-sent once the cause is fixed.
- With the cloud database stalled longer than the edge's 4 s read timeout, 5 queries with
  ``human_review=ALWAYS`` make 5 rows and 5 review items, not 10.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.helpers import (
    EdgeProcesses,
    cloud_image_query_ids,
    cloud_server,
    cloud_with_device,
    edge_processes,
    jpeg,
)
from tests.support.procs import postgres_cluster, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fast retries so that the test waits seconds, not the production 300 s cap.
FAST_RETRIES = {"INTELLIOPTICS_OUTBOX_BACKOFF_CAP_S": "2", "INTELLIOPTICS_OUTBOX_POLL_INTERVAL_S": "0.2"}


def _wait(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.25)


def _escalate(edge: EdgeProcesses, detector_id: str, image: bytes) -> str:
    """One query the edge answers unconfidently (an escalation); returns its id."""
    response = httpx.post(
        f"{edge.gateway_url}/device-api/v1/image-queries",
        params={"detector_id": detector_id},
        content=image,
        headers={"x-api-token": edge.token, "content-type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.json()["done_processing"] is False, "expected an escalation"
    return str(response.json()["id"])


def _status(edge: EdgeProcesses) -> dict[str, Any]:
    return httpx.get(f"{edge.gateway_url}/status.json", timeout=10).json()


def test_escalations_to_a_detector_off_in_the_cloud_arrive_once_it_is_on(tmp_path: Path) -> None:
    with cloud_with_device(tmp_path / "cloud", "off-then-on") as (server, detector_id, device):
        with server.client() as admin:
            assert admin.patch(f"/v1/detectors/{detector_id}", json={"status": "OFF"}).status_code == 200
        with edge_processes(
            tmp_path / "edge", [detector_id], preset="default", cloud_url=server.url, device_token=device,
            extra_env=FAST_RETRIES,
        ) as edge:  # fmt: skip
            accepted = [_escalate(edge, detector_id, jpeg(128)) for _ in range(10)]
            # Each has met the 409 at least once, and is still pending, not parked.
            outbox = _wait(lambda: (o := _status(edge)["outbox"])["retrying"] == 10 and o, 30, "10 items retrying")
            assert outbox["dead_letters"]["total"] == 0 and outbox["pending"]["escalation"] == 10
            assert "OFF" in str(_status(edge)["cloud_sync"]["sender_last_error"])
            time.sleep(3)  # a few more refusals: still nothing parked
            assert _status(edge)["outbox"]["dead_letters"]["total"] == 0
            with server.client() as admin:
                assert admin.patch(f"/v1/detectors/{detector_id}", json={"status": "ON"}).status_code == 200
            _wait(lambda: set(accepted) <= set(cloud_image_query_ids(server, detector_id)), 30, "all 10 delivered")
            in_cloud = cloud_image_query_ids(server, detector_id)
            _wait(lambda: _status(edge)["outbox"]["pending"]["escalation"] == 0, 10, "outbox drained")
    assert sorted(in_cloud) == sorted(accepted), "each accepted escalation exactly once"
    print(f"detector OFF then ON: {len(accepted)} accepted, {len(in_cloud)} in the cloud, 0 dead letters")


def _noisy_jpeg(seed: int) -> bytes:
    """About 50 KB of noise around mid-grey: unconfident for the brightness model, and
    over the cloud's image limit of this test."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_dead_letters_are_visible_and_can_be_discarded_or_resent(tmp_path: Path) -> None:
    limits = {"INTELLIOPTICS_AUTH_MAX_FAILURES": "0", "INTELLIOPTICS_MAX_IMAGE_BYTES": "4096"}
    with cloud_server(tmp_path / "cloud", **limits) as server:
        with server.client() as admin:
            detector_id = admin.post("/v1/detectors", json={"name": "dead-letters", "query": "bright?"}).json()["id"]
            device = admin.post("/v1/tokens", json={"name": "edge", "role": "device"}).json()["token"]
        with edge_processes(
            tmp_path / "edge", [detector_id], preset="default", cloud_url=server.url, device_token=device,
            extra_env=FAST_RETRIES,
        ) as edge, httpx.Client(base_url=edge.gateway_url, headers={"x-api-token": edge.token}, timeout=10) as http:  # fmt: skip
            accepted = [_escalate(edge, detector_id, _noisy_jpeg(seed)) for seed in range(3)]
            _wait(lambda: _status(edge)["outbox"]["dead_letters"]["total"] == 3, 30, "3 dead letters")
            assert _status(edge)["outbox"]["dead_letters"]["by_reason"] == {"image_too_large": 3}
            metrics = http.get("/metrics").text
            assert 'intellioptics_edge_outbox_dead_letters{reason="image_too_large"} 3.0' in metrics
            assert "dead letters 3 waiting" in http.get("/status").text

            listing = http.get("/edge-outbox/dead-letters").json()
            assert {letter["image_query_id"] for letter in listing["results"]} == set(accepted)
            assert all("HTTP 413" in letter["last_error"] for letter in listing["results"])
            assert http.get("/edge-outbox/dead-letters", headers={"x-api-token": "wrong-token"}).status_code == 401
            doomed = next(letter for letter in listing["results"] if letter["image_query_id"] == accepted[0])
            empty = http.post(f"/edge-outbox/dead-letters/{doomed['seq']}/discard", json={})
            assert empty.status_code == 400 and "reason" in empty.json()["detail"]
            discarded = http.post(f"/edge-outbox/dead-letters/{doomed['seq']}/discard", json={"reason": "test image"})
            assert discarded.status_code == 200, discarded.text
            again = http.post(f"/edge-outbox/dead-letters/{doomed['seq']}/discard", json={"reason": "twice"})
            assert again.status_code == 404 and again.json()["code"] == "dead_letter_not_found"
            for seq in ("0", "-3", str(2**80)):  # not a rowid: a clear 4xx, never SQLite's overflow as a 500
                assert http.post(f"/edge-outbox/dead-letters/{seq}/resend").status_code in (400, 422), seq

            # The cause fixed (the cloud's limit raised), the other two re-sent: they arrive.
            server.process.stop()
            assert isinstance(server.process.env, dict)
            server.process.env["INTELLIOPTICS_MAX_IMAGE_BYTES"] = str(16 * 1024 * 1024)
            server.process.start()
            wait_http(f"{server.url}/health/live", timeout=90, process=server.process)
            assert http.post("/edge-outbox/dead-letters/resend", json={}).json() == {"resent": 2}
            _wait(lambda: set(accepted[1:]) <= set(cloud_image_query_ids(server, detector_id)), 30, "2 re-sent")
            outbox = _wait(lambda: (o := _status(edge)["outbox"])["pending"]["escalation"] == 0 and o, 10, "drained")
            assert outbox["dead_letters"]["total"] == 0 and outbox["discarded"] == 1 and outbox["resent"] == 2
            assert sorted(cloud_image_query_ids(server, detector_id)) == sorted(accepted[1:])


def _stall(database_url: str, seconds: float, locked: threading.Event) -> None:
    """Hold an exclusive lock on image_queries: every read and write of it waits."""
    import psycopg2

    connection = psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE image_queries IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(seconds)
        connection.commit()
    finally:
        connection.close()


def _count(database_url: str, table: str, detector_id: str) -> int:
    import psycopg2

    connection = psycopg2.connect(database_url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE detector_id = %s", (detector_id,))
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


@pytest.mark.postgres
def test_a_stalled_cloud_database_makes_no_duplicate_queries(tmp_path: Path) -> None:
    from groundlight import Groundlight

    with postgres_cluster(tmp_path / "pg") as cluster:
        url = cluster.create_database("io_stall")
        with cloud_server(tmp_path / "cloud", database_url=url, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server:
            with server.client() as admin:
                detector_id = admin.post("/v1/detectors", json={"name": "stall", "query": "bright?"}).json()["id"]
                # Not in edge-config, no edge model: the edge can only forward its queries.
                cloud_only = admin.post("/v1/detectors", json={"name": "cloud-only", "query": "dim?"}).json()["id"]
                device = admin.post("/v1/tokens", json={"name": "edge", "role": "device"}).json()["token"]
            with edge_processes(
                tmp_path / "edge", [detector_id], preset="default", cloud_url=server.url, device_token=device,
                gateway_to_cloud=True, extra_env=FAST_RETRIES,
            ) as edge:  # fmt: skip
                gl = Groundlight(endpoint=edge.gateway_url, api_token=device)
                gl.submit_image_query(detector_id, jpeg(230), wait=0)  # token and detector known to the edge now
                assert _count(url, "image_queries", detector_id) == 0
                forwarded = httpx.Client(base_url=edge.gateway_url, headers={"x-api-token": device}, timeout=30)
                warm = forwarded.post(
                    "/device-api/v1/image-queries", params={"detector_id": cloud_only}, content=jpeg(230),
                    headers={"content-type": "image/jpeg"},
                )  # fmt: skip
                assert warm.status_code == 201, warm.text  # answered by the cloud: the edge knows the detector
                locked = threading.Event()
                staller = threading.Thread(target=_stall, args=(url, 6.0, locked))
                staller.start()
                assert locked.wait(10)
                answers: list[Any] = []
                errors: list[BaseException] = []

                def submit() -> None:
                    try:
                        answers.append(gl.submit_image_query(detector_id, jpeg(230), human_review="ALWAYS", wait=0))
                    except Exception as exc:
                        errors.append(exc)

                refused: list[httpx.Response] = []

                def submit_cloud_only() -> None:
                    refused.append(
                        forwarded.post(
                            "/device-api/v1/image-queries", params={"detector_id": cloud_only}, content=jpeg(230),
                            headers={"content-type": "image/jpeg"},
                        )
                    )  # fmt: skip

                started = time.monotonic()
                clients = [threading.Thread(target=submit) for _ in range(5)]
                clients += [threading.Thread(target=submit_cloud_only) for _ in range(5)]
                for thread in clients:
                    thread.start()
                for thread in clients:
                    thread.join(60)
                answered_s = time.monotonic() - started
                staller.join(30)
                assert not errors, errors
                ids = sorted(iq.id for iq in answers)
                assert len(set(ids)) == 5
                _wait(lambda: _status(edge)["outbox"]["pending"]["escalation"] == 0, 60, "outbox drained")
                rows = _count(url, "image_queries", detector_id)
                reviews = _count(url, "review_items", detector_id)
                in_cloud = sorted(cloud_image_query_ids(server, detector_id))
                # No edge model, no timely cloud answer: 503, naming the id the cloud may have stored.
                assert [r.status_code for r in refused] == [503] * 5, [r.text for r in refused]
                named = sorted(re.search(r"image_query_id=(iq_\w+)", r.json()["detail"]).group(1) for r in refused)  # type: ignore[union-attr]
                stored = sorted(set(cloud_image_query_ids(server, cloud_only)) - {warm.json()["id"]})
                retried = forwarded.post(
                    "/device-api/v1/image-queries", params={"detector_id": cloud_only, "image_query_id": named[0]},
                    content=jpeg(230), headers={"content-type": "image/jpeg"},
                )  # fmt: skip
                after_retry = _count(url, "image_queries", cloud_only)
                forwarded.close()
    print(
        f"cloud database stalled 6 s: 5 answered in {answered_s:.1f} s, {rows} rows, {reviews} review items; "
        f"5 forwarded-only queries answered 503, {len(stored)} stored by the cloud under the ids the 503s named"
    )
    assert in_cloud == ids, "the cloud holds exactly the 5 queries the SDK was answered with"
    assert rows == 5 and reviews == 5
    assert stored == named, "what the cloud stored of the 503-answered queries is what the 503s named, once each"
    assert retried.status_code == 200 and retried.json()["id"] == named[0], retried.text  # the stored one
    assert after_retry == 1 + 5
