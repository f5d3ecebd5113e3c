"""Health, Prometheus metrics, OpenAPI, error bodies for unknown routes, and the static web UI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_health(client, settings) -> None:
    assert client.get("/health/live").json() == {"status": "alive", "checks": {}}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "blob_store": "ok"}


def test_ready_is_503_when_the_blob_store_is_gone(client, settings) -> None:
    import shutil

    shutil.rmtree(settings.resolved_blob_dir)
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["blob_store"].startswith("error")


def test_metrics_count_requests_by_route_template(admin, client) -> None:
    detector = admin.create_detector()
    admin.get(f"/v1/detectors/{detector['id']}")
    text = client.get("/metrics").text
    assert (
        'intellioptics_cloud_requests_total{method="GET",route="/v1/detectors/{detector_id}",status="200"} 1.0' in text
    )
    assert "intellioptics_cloud_request_seconds_bucket" in text


def test_openapi_documents_the_api(client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/me",
        "/v1/detectors",
        "/v1/image-queries",
        "/v1/labels",
        "/v1/review/claim",
        "/v1/detectors/{detector_id}/models",
        "/edge-api/v1/fetch-model-urls/{detector_id}",
        "/v1/training-jobs/claim",
        "/v1/edges/register",
    ):
        assert path in paths, path
    assert "ReviewItem" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_unknown_routes_and_methods_are_json_errors(client) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = client.request("PUT", "/v1/me")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<html>IntelliOptics</html>")
    (root / "assets" / "app.js").write_text("console.log(1)")
    return root


def test_web_ui_is_served_with_spa_fallback(settings, web_dir, make_api) -> None:
    api = make_api(settings.model_copy(update={"web_dir": web_dir}))
    assert api.client.get("/").text == "<html>IntelliOptics</html>"
    assert api.client.get("/assets/app.js").text == "console.log(1)"
    assert api.client.get("/review/queue/somewhere").text == "<html>IntelliOptics</html>"
    assert api.client.get("/../../etc/passwd").text == "<html>IntelliOptics</html>"
    for nul in ("/%00", "/assets/app.js%00.html", "/review/%00/queue"):
        response = api.client.get(nul)  # pathlib's "embedded null byte" was a 500
        assert response.status_code == 404 and response.json()["code"] == "not_found", (nul, response.text)
        assert response.headers["x-frame-options"] == "DENY"
    api_miss = api.client.get("/v1/not-a-route")
    assert api_miss.status_code == 404 and api_miss.json()["code"] == "not_found"
    # The edge's own routes, asked of the cloud, and clients that want JSON: no UI page.
    for path in ("/edge-config", "/edge-detector-readiness", "/edge-info", "/status"):
        assert api.client.get(path).status_code == 404, path
    wants_json = api.client.get("/review/queue/somewhere", headers={"accept": "application/json"})
    assert wants_json.status_code == 404 and wants_json.json()["code"] == "not_found"
    browser = api.client.get("/review", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.text == "<html>IntelliOptics</html>"
    assert api.client.get("/%00").status_code == 404
    # A path no route has is a 404 for every method; a path a route has, a 405.
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        missing = api.client.request(method, "/v1/not-a-route")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", method
        assert api.client.request(method, "/review/queue").status_code == 404, method
    wrong_method = api.client.request("DELETE", "/v1/me")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["allow"]
    assert api.get("/v1/me").status_code == 200


def test_json_bodies_over_1_mib_get_413_after_the_token_and_before_they_are_read(admin, client) -> None:
    oversized = json.dumps({"name": "big", "query": "Is it big?", "metadata": {"blob": "x" * (1024 * 1024)}})
    headers = {"content-type": "application/json"}
    refused = admin.post("/v1/detectors", content=oversized, headers=headers)
    assert refused.status_code == 413, refused.text
    assert refused.json()["code"] == "payload_too_large" and "smaller document" in refused.json()["detail"]
    # The token first: a stranger learns nothing about the body limit.
    stranger = client.request("POST", "/v1/detectors", content=oversized, headers={**headers, "x-api-token": "nope"})
    assert stranger.status_code == 401

    # Sent chunked (no Content-Length): cut at the limit, the usual invalid-JSON 4xx, never a 500.
    async def chunks():  # the test client is async underneath: an async body streams without a length
        for i in range(0, len(oversized), 65536):
            yield oversized[i : i + 65536].encode()

    chunked = admin.post("/v1/detectors", content=chunks(), headers=headers)
    assert chunked.status_code in (400, 422) and "JSON" in chunked.json()["detail"], chunked.text
    names = [d["name"] for d in admin.get("/v1/detectors").json()["results"]]
    assert "big" not in names
    assert admin.create_detector("small")["name"] == "small"
