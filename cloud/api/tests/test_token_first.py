"""Who asks comes before what is sent, and a refused lookup counts against the guesser.

- Every API route that takes a body answers a missing or refused token before it reads a
  byte of the body (FastAPI would otherwise read, and for multipart spool to disk, the
  whole body before the route's token dependency runs). The bodies here are streams
  that record what the server pulled.
- An edge that checks a caller's token on the caller's behalf (``x-intellioptics-caller``,
  vouched for by its device token) gets the caller's refusals counted against that
  caller and the token tried, never against its own address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from intellioptics_common.ratelimit import CALLER_HEADER, VOUCHER_HEADER, FailedAuthLimiter

BAD = "io_notarealtokenatall_0123456789"
BOUNDARY = "tokenfirstboundary"


def streamed(pulled: list[int], chunks: int = 64, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        for index in range(chunks):
            pulled.append(index)
            yield bytes(size)

    return body()


def multipart_upload(pulled: list[int]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        pulled.append(-1)
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n{{}}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="primary"; filename="model.buf"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for index in range(64):
            pulled.append(index)
            yield bytes(1024 * 1024)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body()


def test_a_multipart_upload_with_a_bad_token_is_refused_before_it_is_read(admin) -> None:
    detector = admin.create_detector()["id"]
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    for token in (BAD, ""):
        pulled: list[int] = []
        response = admin.as_token(token).post(
            f"/v1/detectors/{detector}/models", content=multipart_upload(pulled), headers=headers
        )
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
        assert pulled == []  # not a byte of the 64 MiB body was pulled, so nothing spooled
    # A reviewer is authenticated but may not upload: still refused before the body.
    pulled = []
    reviewer = admin.new_token("reviewer")
    refused = reviewer.post(f"/v1/detectors/{detector}/models", content=multipart_upload(pulled), headers=headers)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert refused.headers["x-content-type-options"] == "nosniff"  # the security headers still apply


def test_json_bodies_with_a_bad_token_are_not_read(admin) -> None:
    detector = admin.create_detector()["id"]
    stranger = admin.as_token(BAD)
    json_headers = {"content-type": "application/json"}
    for method, path in (
        ("POST", "/v1/detectors"),
        ("PATCH", f"/v1/detectors/{detector}"),
        ("POST", "/v1/labels"),
        ("POST", "/v1/edges/register"),
        ("POST", "/v1/tokens"),
        ("POST", f"/device-api/v1/detectors/{detector}/training-jobs"),
    ):
        pulled: list[int] = []
        response = stranger.request(method, path, content=streamed(pulled), headers=json_headers)
        assert response.status_code == 401, (method, path, response.text)
        assert pulled == [], (method, path)


def test_a_valid_token_still_reaches_the_route_once(admin) -> None:
    created = admin.post("/v1/detectors", json={"name": "token-first", "query": "q?"})
    assert created.status_code == 201, created.text
    assert admin.post("/v1/nothing-here", json={}).status_code == 404  # unknown routes keep their 404


def test_vouched_lookups_count_against_the_caller_not_the_edge(admin, client) -> None:
    edge = admin.new_token("device")
    client.app.state.auth_limiter = FailedAuthLimiter(max_failures=2, window_s=60)
    attacker = {CALLER_HEADER: "203.0.113.9", VOUCHER_HEADER: edge.token}
    for expected in (401, 401, 429):
        response = admin.as_token(f"{BAD}{expected}x").get("/device-api/v1/me", headers=attacker)
        assert response.status_code == expected, response.text
    # The edge itself (same address as the lookups) and other callers are not blocked.
    assert edge.get("/device-api/v1/me").status_code == 200
    other = {CALLER_HEADER: "198.51.100.1", VOUCHER_HEADER: edge.token}
    assert admin.as_token(BAD + "other").get("/device-api/v1/me", headers=other).status_code == 401
    reviewer = admin.new_token("reviewer")
    assert reviewer.get("/device-api/v1/me", headers=other).status_code == 200  # valid tokens pass


def test_one_bad_token_tried_from_many_callers_is_limited_per_token(admin, client) -> None:
    edge = admin.new_token("device")
    client.app.state.auth_limiter = FailedAuthLimiter(max_failures=2, window_s=60)
    answers = [
        admin.as_token(BAD)
        .get("/device-api/v1/me", headers={CALLER_HEADER: f"198.51.100.{i}", VOUCHER_HEADER: edge.token})
        .status_code
        for i in range(3)
    ]
    assert answers == [401, 401, 429]
    assert edge.get("/device-api/v1/me").status_code == 200


def test_a_voucher_must_be_a_valid_edge_token(admin, client) -> None:
    client.app.state.auth_limiter = FailedAuthLimiter(max_failures=2, window_s=60)
    reviewer = admin.new_token("reviewer")
    not_an_edge = {CALLER_HEADER: "203.0.113.9", VOUCHER_HEADER: reviewer.token}
    refused = admin.as_token(BAD).get("/device-api/v1/me", headers=not_an_edge)
    assert refused.status_code == 403 and "x-intellioptics-caller" in refused.json()["detail"]
    forged = {CALLER_HEADER: "203.0.113.9", VOUCHER_HEADER: BAD + "voucher"}
    first = admin.as_token(BAD).get("/device-api/v1/me", headers=forged)
    assert first.status_code == 401 and VOUCHER_HEADER in first.json()["detail"]
    admin.as_token(BAD).get("/device-api/v1/me", headers=forged)
    # A forged voucher is a failure of the sender's own address: now blocked, whoever it names.
    assert admin.get("/device-api/v1/me").status_code == 429
    # Without a voucher the caller header is just a claim: it is ignored.
    unvouched = admin.as_token(BAD).get("/device-api/v1/me", headers={CALLER_HEADER: "192.0.2.1"})
    assert unvouched.status_code == 429
