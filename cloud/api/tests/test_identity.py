"""Identity: /me as the SDK reads it, tokens and roles, accounts and isolation."""

from __future__ import annotations

from intellioptics_cloud.auth import hash_token


def test_me_has_the_sdk_fields_plus_role_and_account(admin) -> None:
    response = admin.get("/device-api/v1/me")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"email", "username", "group", "is_superuser", "role", "account_id"}
    assert isinstance(body["group"]["id"], int) and body["group"]["id"] == body["account_id"]
    assert body["role"] == "admin" and body["is_superuser"] is True


def test_missing_and_unknown_tokens_are_401_json(client) -> None:
    missing = client.get("/v1/me")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    unknown = client.get("/v1/me", headers={"x-api-token": "io_notarealtokenatall_xxxxxxxx"})
    assert unknown.status_code == 401 and "not valid" in unknown.json()["detail"]


def test_bearer_header_is_accepted(client, admin) -> None:
    response = client.get("/v1/me", headers={"authorization": f"Bearer {admin.token}"})
    assert response.status_code == 200


def test_by_snippet_answers_token_ttl_null_or_404(admin) -> None:
    found = admin.get(f"/v1/api-tokens/by-snippet/{admin.token[:20]}")
    assert found.status_code == 200
    assert found.json()["token_ttl"] is None and found.json()["raw_key_snippet"] == admin.token[:20]
    assert admin.get("/v1/api-tokens/by-snippet/io_nosuchsnippet0000").status_code == 404


def test_tokens_are_created_listed_hashed_and_deleted(admin, settings, helpers) -> None:
    created = admin.post("/v1/tokens", json={"name": "alice", "role": "reviewer"})
    assert created.status_code == 201
    body = created.json()
    raw = body["token"]
    assert raw[:20] == body["snippet"]
    listed = admin.get("/v1/tokens").json()
    assert any(t["id"] == body["id"] for t in listed)
    assert all("token" not in t for t in listed)
    # At rest only the hash exists.
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT token_hash FROM api_tokens WHERE id = :id"), {"id": body["id"]}
        ).scalar_one()
        assert (
            connection.execute(
                text("SELECT COUNT(*) FROM api_tokens WHERE token_hash = :raw"), {"raw": raw}
            ).scalar_one()
            == 0
        )
    engine.dispose()
    assert stored == hash_token(raw)
    reviewer = admin.as_token(raw)
    assert reviewer.get("/v1/me").json()["role"] == "reviewer"
    assert admin.delete(f"/v1/tokens/{body['id']}").status_code == 204
    assert reviewer.get("/v1/me").status_code == 401


def test_roles_limit_what_a_token_may_do(admin, jpeg) -> None:
    detector = admin.create_detector()
    reviewer = admin.new_token("reviewer")
    device = admin.new_token("device")
    # reviewer: read yes, create detectors / submit no
    assert reviewer.get(f"/v1/detectors/{detector['id']}").status_code == 200
    denied = reviewer.post("/v1/detectors", json={"name": "x", "query": "q?"})
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert reviewer.submit(detector["id"], jpeg()).status_code == 403
    # device: submit yes, label / manage tokens no
    submitted = device.submit(detector["id"], jpeg())
    assert submitted.status_code == 201
    label = device.post("/v1/labels", json={"label": "YES", "image_query_id": submitted.json()["id"]})
    assert label.status_code == 403
    assert device.get("/v1/tokens").status_code == 403
    assert device.get("/v1/review/queue").status_code == 403
    assert reviewer.get("/v1/review/queue").status_code == 200


def test_bad_token_requests_are_clear_4xx(admin) -> None:
    assert admin.post("/v1/tokens", json={"name": "x", "role": "king"}).status_code == 422
    assert admin.post("/v1/tokens", json={"name": "x", "role": "admin", "extra": 1}).status_code == 422
    assert (
        admin.post("/v1/tokens", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    )
    assert admin.delete("/v1/tokens/tok_doesnotexist123").status_code == 404


def test_only_a_superuser_creates_accounts(admin, other_account) -> None:
    assert other_account.get("/v1/me").json()["is_superuser"] is False
    response = other_account.post("/v1/accounts", json={"name": "sneaky"})
    assert response.status_code == 403
    duplicate = admin.post("/v1/accounts", json={"name": "default"})
    assert duplicate.status_code == 409


def test_no_token_reads_or_writes_another_accounts_data(admin, other_account, jpeg) -> None:
    detector = admin.create_detector("mine")
    iq = admin.submit(detector["id"], jpeg()).json()
    theirs = other_account
    assert theirs.get(f"/v1/detectors/{detector['id']}").status_code == 404
    assert theirs.get("/v1/detectors").json()["count"] == 0
    assert theirs.get("/v1/detectors", params={"name": "mine"}).json()["count"] == 0
    assert theirs.patch(f"/v1/detectors/{detector['id']}", json={"confidence_threshold": 0.5}).status_code == 404
    assert theirs.delete(f"/v1/detectors/{detector['id']}").status_code == 404
    assert theirs.get(f"/v1/image-queries/{iq['id']}").status_code == 404
    assert theirs.get(f"/v1/image-queries/{iq['id']}/image").status_code == 404
    assert theirs.get("/v1/image-queries").json()["count"] == 0
    assert theirs.submit(detector["id"], jpeg()).status_code == 404
    assert theirs.post("/v1/labels", json={"label": "YES", "image_query_id": iq["id"]}).status_code == 404
    assert theirs.get("/v1/review/queue").json()["count"] == 0
    assert theirs.post("/v1/review/claim").status_code == 204
    assert theirs.get(f"/v1/detectors/{detector['id']}/models").status_code == 404
    assert theirs.get(f"/edge-api/v1/fetch-model-urls/{detector['id']}").status_code == 404
    assert theirs.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).status_code == 404
    assert theirs.get(f"/v1/detectors/{detector['id']}/dataset").status_code == 404
    # The same name is free in the other account.
    assert theirs.post("/v1/detectors", json={"name": "mine", "query": "q?"}).status_code == 201
    # ...and the first account still sees only its own.
    assert admin.get("/v1/detectors", params={"name": "mine"}).json()["results"][0]["id"] == detector["id"]
