"""Cloud API secrets, brute force, browser headers and hostile input, on a real process.

Order matters in this module: the last test greps the service log for every raw token
the earlier ones sent.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from intellioptics_cloud.auth import sign
from tests.reliability.helpers import SECRET_KEY, CloudServer, cloud_env, cloud_server, jpeg, upload_brightness_model
from tests.reliability.hostile import SQL_METACHARACTERS, TRAVERSAL_IDS, hostile_images, nasty_valid_images
from tests.support.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_FAILURES = 5
WINDOW_S = 3
ALLOWED_ORIGIN = "https://review.example.com"
USED_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    with cloud_server(
        tmp_path_factory.mktemp("cloud-security"),
        INTELLIOPTICS_AUTH_MAX_FAILURES=str(MAX_FAILURES),
        INTELLIOPTICS_AUTH_FAILURE_WINDOW_S=str(WINDOW_S),
        INTELLIOPTICS_CORS_ALLOW_ORIGINS=ALLOWED_ORIGIN,
        INTELLIOPTICS_MAX_IMAGE_BYTES=str(1024 * 1024),
    ) as cloud:
        USED_TOKENS.append(cloud.token)
        yield cloud


@pytest.fixture(scope="module")
def detector(server: CloudServer) -> dict:
    with server.client() as admin:
        response = admin.post("/v1/detectors", json={"name": "security-" + uuid.uuid4().hex[:6], "query": "bright?"})
        assert response.status_code == 201, response.text
        detector = response.json()
        assert upload_brightness_model(admin, detector["id"]).status_code == 201
        return detector


def _from(client_ip: str, token: str) -> dict[str, str]:
    # The test runs on loopback, a trusted proxy: X-Forwarded-For's last hop names the client.
    return {"x-api-token": token, "x-forwarded-for": client_ip}


def test_token_brute_force_is_rate_limited_per_client(server: CloudServer) -> None:
    attacker, bystander = "203.0.113.7", "203.0.113.8"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        codes = [
            http.get("/v1/me", headers=_from(attacker, f"io_guess{i:02d}_" + "x" * 30)).status_code
            for i in range(MAX_FAILURES)
        ]
        assert codes == [401] * MAX_FAILURES
        blocked = http.get("/v1/me", headers=_from(attacker, "io_guess_next_" + "x" * 30))
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["code"] == "too_many_failed_attempts"
        retry_after = int(blocked.headers["retry-after"])
        assert 1 <= retry_after <= WINDOW_S
        # Blocked before the check: even the right token waits out the window.
        assert http.get("/v1/me", headers=_from(attacker, server.token)).status_code == 429
        # Another client is not affected, and a spoofed first XFF hop does not escape the block.
        assert http.get("/v1/me", headers=_from(bystander, server.token)).status_code == 200
        spoofed = {"x-api-token": "io_guess_spoof_" + "x" * 30, "x-forwarded-for": f"198.51.100.1, {attacker}"}
        assert http.get("/v1/me", headers=spoofed).status_code == 429
        time.sleep(retry_after + 0.2)
        assert http.get("/v1/me", headers=_from(attacker, server.token)).status_code == 200


def test_tokens_are_hashed_at_rest(server: CloudServer) -> None:
    with server.client() as admin:
        issued = admin.post("/v1/tokens", json={"name": "at-rest", "role": "device"}).json()
    raw = issued["token"]
    USED_TOKENS.append(raw)
    database = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        hashes = {row[0] for row in connection.execute("SELECT token_hash FROM api_tokens")}
    assert hashlib.sha256(raw.encode()).hexdigest() in hashes
    # No table, column or WAL page anywhere in the database files holds the raw tokens.
    files = [Path(database), Path(database + "-wal")]
    blob = b"".join(p.read_bytes() for p in files if p.exists())
    for token in (raw, server.token):
        assert token.encode() not in blob, "a raw token is stored in the database"
        assert token[:20].encode() in blob  # the snippet the SDK looks up is stored, by design


def test_signed_model_urls_expire_and_resist_tampering(server: CloudServer, detector: dict) -> None:
    with server.client() as admin:
        device_token = admin.post("/v1/tokens", json={"name": "dl", "role": "device"}).json()["token"]
    USED_TOKENS.append(device_token)
    with server.client(device_token) as device:
        info = device.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}")
        assert info.status_code == 200, info.text
        url = info.json()["model_binary_url"]
        assert httpx.get(url, timeout=10).status_code == 200
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    base = f"{server.url}{parts.path}"
    expires, signature = int(query["expires"]), query["signature"]
    flipped = ("1" if signature[0] != "1" else "2") + signature[1:]
    cases = {
        "tampered signature": {"expires": expires, "signature": flipped},
        "extended expiry, old signature": {"expires": expires + 3600, "signature": signature},
        # Correctly signed with the server's secret, but in the past: only expiry can refuse it.
        "expired": {
            "expires": int(time.time()) - 5,
            "signature": sign(SECRET_KEY, f"{parts.path}:{int(time.time()) - 5}"),
        },
        "non-hex signature": {"expires": expires, "signature": "é" * 64},
    }
    for name, params in cases.items():
        response = httpx.get(base, params=params, timeout=10)
        assert response.status_code == 403, f"{name}: {response.status_code} {response.text}"
        assert response.json()["code"] == "forbidden"
    other = base.replace("-primary", "-oodd")
    assert httpx.get(other, params={"expires": expires, "signature": signature}, timeout=10).status_code == 403


def test_security_headers_and_cors(server: CloudServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for response in (
            http.get("/health/live"),
            http.get("/v1/me", headers={"x-api-token": server.token}),
            http.get("/v1/me"),
            http.get("/v1/nothing-here"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["referrer-policy"] == "no-referrer"
        preflight = {"access-control-request-method": "GET", "access-control-request-headers": "x-api-token"}
        allowed = http.options("/v1/me", headers={"origin": ALLOWED_ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        refused = http.options("/v1/me", headers={"origin": "https://evil.example.com", **preflight})
        assert "access-control-allow-origin" not in refused.headers
        simple = http.get("/v1/me", headers={"origin": "https://evil.example.com", "x-api-token": server.token})
        assert "access-control-allow-origin" not in simple.headers


def _assert_clear_4xx(
    response: httpx.Response, case: str, allowed: tuple[int, ...] = (400, 404, 413, 415, 422)
) -> None:
    assert response.status_code in allowed, f"{case}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["detail"] and body["code"], f"{case}: {body}"


def test_hostile_images_are_clear_4xx(server: CloudServer, detector: dict) -> None:
    images = hostile_images()
    with server.client() as admin:
        for name, body in images.items():
            for content_type in ("image/jpeg", "image/png", "application/octet-stream"):
                response = admin.post(
                    "/v1/image-queries",
                    params={"detector_id": detector["id"]},
                    content=body,
                    headers={"content-type": content_type},
                )
                _assert_clear_4xx(response, f"{name} as {content_type}")
        for name, body in nasty_valid_images().items():
            started = time.perf_counter()
            response = admin.post(
                "/v1/image-queries",
                params={"detector_id": detector["id"]},
                content=body,
                headers={"content-type": "image/png"},
            )
            assert response.status_code in (201, 400, 413), f"{name}: {response.status_code}"
            assert time.perf_counter() - started < 10, f"{name} took too long"
        oversized = admin.post(
            "/v1/image-queries",
            params={"detector_id": detector["id"]},
            content=jpeg(10) + b"\x00" * (2 * 1024 * 1024),
            headers={"content-type": "image/jpeg"},
        )
        assert oversized.status_code == 413 and oversized.json()["code"] == "image_too_large"
        listing = admin.get("/v1/image-queries", params={"detector_id": detector["id"]}).json()
    assert listing["count"] <= len(nasty_valid_images()), "a hostile image was stored as an image query"
    assert len(images) * 3 + 1 >= 52  # cases tried


def test_path_traversal_in_ids_and_blob_keys(server: CloudServer, detector: dict) -> None:
    blob_root = server.data_dir / "cloud" / "blobs"
    templates = (
        "/v1/detectors/{}",
        "/v1/image-queries/{}",
        "/v1/image-queries/{}/image",
        "/v1/detectors/{}/models",
        "/v1/model-binaries/{}?expires=9999999999&signature=" + "0" * 64,
        "/edge-api/v1/fetch-model-urls/{}",
        "/v1/edges/{}",
        "/v1/training-jobs/{}",
    )
    tried = 0
    with server.client() as admin:
        for template in templates:
            for evil in TRAVERSAL_IDS:
                response = admin.get(template.format(evil))
                tried += 1
                assert response.status_code in (400, 403, 404, 422), f"{template} {evil}: {response.status_code}"
                assert response.json()["code"]
                assert b"root:" not in response.content
        submitted = admin.post(
            "/v1/image-queries",
            params={"detector_id": detector["id"], "image_query_id": "iq_../../../../escape"},
            content=jpeg(200),
            headers={"content-type": "image/jpeg"},
        )
        tried += 1
        assert submitted.status_code in (400, 422), submitted.text
    escaped = list(server.data_dir.parent.rglob("*escape*"))
    assert not escaped, escaped
    assert blob_root.exists()
    assert tried == len(templates) * len(TRAVERSAL_IDS) + 1


def test_sql_metacharacters_in_names_and_filters(server: CloudServer) -> None:
    with server.client() as admin:
        for value in SQL_METACHARACTERS:
            created = admin.post("/v1/detectors", json={"name": value, "query": value})
            assert created.status_code == 201, created.text
            assert created.json()["name"] == value
            for params in ({"detector_id": value}, {"detector_id": value, "page": "1"}):
                listed = admin.get("/v1/image-queries", params=params)
                assert listed.status_code in (200, 400, 404), listed.text
            assert admin.get(f"/v1/detectors/{value}").status_code in (404, 400)
            assert admin.get("/v1/review/queue", params={"detector_id": value}).status_code in (200, 404)
            token = admin.post("/v1/tokens", json={"name": value[:50], "role": "reviewer"})
            assert token.status_code in (201, 422), token.text
        names = {d["name"] for d in admin.get("/v1/detectors", params={"page_size": 100}).json()["results"]}
        assert set(SQL_METACHARACTERS) <= names  # every table still there, every name verbatim
        assert admin.get("/v1/me").status_code == 200


def test_header_injection_and_oversized_metadata(server: CloudServer, detector: dict) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        injected = http.get(
            "/v1/me", headers={"x-api-token": server.token, "x-request-id": "abc%0d%0aSet-Cookie:%20pwned=1"}
        )
        assert injected.status_code == 200 and "set-cookie" not in injected.headers
        for headers in (
            {"x-api-token": "x" * 8000},
            {"x-api-token": server.token.encode() + b"\xc3\xa9"},  # non-ASCII bytes
            {"x-api-token": server.token, "content-type": "image/jpeg; boundary=" + "a" * 4000},
        ):
            response = http.get("/v1/me", headers=headers)
            assert response.status_code in (200, 400, 401), response.status_code
        params = {"detector_id": detector["id"]}
        for metadata in (
            '{"k": "' + "v" * 5000 + '"}',
            "not json",
            "[" * 2000 + "]" * 2000,
            '{"a": ' * 300 + "1" + "}" * 300,
        ):
            response = http.post(
                "/v1/image-queries",
                params={**params, "metadata": metadata},
                content=jpeg(200),
                headers={"x-api-token": server.token, "content-type": "image/jpeg"},
            )
            _assert_clear_4xx(response, f"metadata {metadata[:20]}")
        long_query = http.get("/v1/detectors", params={"x": "y" * 60_000}, headers={"x-api-token": server.token})
        assert long_query.status_code < 500


def test_raw_tokens_never_reach_the_log(server: CloudServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "GET /v1/me" in log, "the log has no request lines: the grep below would prove nothing"
    for token in USED_TOKENS:
        assert token not in log, "a raw token is in the cloud log"


def test_placeholder_secret_is_refused_in_production(tmp_path: Path) -> None:
    env = cloud_env(tmp_path, free_port(), "io_placeholdertest00_" + uuid.uuid4().hex)
    env.pop("INTELLIOPTICS_SECRET_KEY")
    env["INTELLIOPTICS_ENVIRONMENT"] = "production"
    completed = subprocess.run(
        [sys.executable, "-m", "intellioptics_cloud"],
        env={**dict(__import__("os").environ), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert "INTELLIOPTICS_SECRET_KEY is a placeholder" in completed.stderr + completed.stdout
