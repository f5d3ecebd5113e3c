"""Bad tokens sent to an edge do not lock that edge out of its cloud (issue 11, finding 5).

Real processes: a cloud with its failed-token limiter on (20 per minute, the default), an
edge with its device token and its own limiter (20 per minute per caller, the default).
An attacker sends 25 made-up tokens to the edge. Before the fix the edge checked each at
the cloud from its own address, the cloud counted them against that address, and the
edge's device token then got 429 (heartbeats, model updates, new callers all failed).
Now the edge vouches for the caller's address and the cloud counts against it; the edge
also stops asking the cloud after 20 refusals from one caller.

All processes share 127.0.0.1; callers are told apart by X-Forwarded-For, which the edge
believes from loopback (its gateway), exactly as it would from nginx.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest

from tests.reliability.helpers import cloud_server, edge_processes, jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ATTACKER = "203.0.113.66"
CAMERA = "198.51.100.20"


def _status(edge_api_url: str) -> dict:
    return httpx.get(f"{edge_api_url}/status.json", timeout=10).json()


def _wait(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_an_attacker_at_the_edge_is_limited_and_the_edge_keeps_its_cloud(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with cloud_server(tmp_path / "cloud") as cloud, cloud.client() as admin:
        detector = admin.post("/v1/detectors", json={"name": "limiter", "query": "bright?"}).json()["id"]
        edge_token = admin.post("/v1/tokens", json={"name": "edge", "role": "device"}).json()["token"]
        camera_token = admin.post("/v1/tokens", json={"name": "camera", "role": "device"}).json()["token"]
        env = {"INTELLIOPTICS_HEARTBEAT_INTERVAL_S": "0.5"}
        with edge_processes(
            tmp_path / "edge", [detector], preset="default", cloud_url=cloud.url, device_token=edge_token, extra_env=env
        ) as edge:
            edge_id = _wait(lambda: _status(edge.edge_api_url)["cloud_sync"]["edge_id"], 30, "registration")

            started = time.monotonic()
            answers = []
            for _ in range(25):
                guess = {"x-api-token": "io_guess_" + uuid.uuid4().hex, "x-forwarded-for": ATTACKER}
                answers.append(httpx.get(f"{edge.edge_api_url}/device-api/v1/me", headers=guess, timeout=10))
            attack_s = time.monotonic() - started
            attack_ended = datetime.now().astimezone()
            codes = [a.status_code for a in answers]
            assert codes == [401] * 20 + [429] * 5, codes
            assert (
                answers[-1].json()["code"] == "too_many_failed_attempts" and int(answers[-1].headers["retry-after"]) > 0
            )
            print(f"25 bad tokens from one caller in {attack_s:.2f} s: 20 x 401, then 429")

            # The edge's device token is not blocked at the cloud.
            assert httpx.get(f"{cloud.url}/v1/me", headers={"x-api-token": edge_token}, timeout=10).status_code == 200
            # A token the edge never saw, from another caller: checked at the cloud and served.
            camera = {"x-api-token": camera_token, "x-forwarded-for": CAMERA}
            assert httpx.get(f"{edge.edge_api_url}/device-api/v1/me", headers=camera, timeout=10).status_code == 200
            forwarded = httpx.post(
                f"{edge.edge_api_url}/device-api/v1/image-queries",
                params={"detector_id": detector, "human_review": "ALWAYS"},
                content=jpeg(250),
                headers={**camera, "content-type": "image/jpeg"},
                timeout=30,
            )
            assert forwarded.status_code == 201, forwarded.text
            # Heartbeats go on after the attack, model update checks without failures.
            before = _status(edge.edge_api_url)["cloud_sync"]["model_updates"]

            def heartbeat_after_attack() -> bool:
                seen = admin.get(f"/v1/edges/{edge_id}").json()["last_seen"]
                return seen is not None and datetime.fromisoformat(seen) > attack_ended

            _wait(heartbeat_after_attack, 20, "a heartbeat after the attack")
            sync = _status(edge.edge_api_url)["cloud_sync"]
            assert sync["model_updates"]["failures"] == before["failures"], sync
            assert sync["reporter_last_error"] is None, sync
            # What the model updater asks next (every refresh_rate) is answered for its token.
            urls = httpx.get(
                f"{cloud.url}/edge-api/v1/fetch-model-urls/{detector}", headers={"x-api-token": edge_token}, timeout=10
            )
            assert urls.status_code == 200, urls.text
            # The attacker stays blocked at the edge, whatever token it tries next.
            again = {"x-api-token": camera_token, "x-forwarded-for": ATTACKER}
            assert httpx.get(f"{edge.edge_api_url}/device-api/v1/me", headers=again, timeout=10).status_code == 429
