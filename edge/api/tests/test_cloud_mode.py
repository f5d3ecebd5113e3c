"""With a cloud configured: tokens checked there, detectors fetched there, queries forwarded
when the edge cannot answer, and the outbox when the cloud is down."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from .conftest import DET_BINARY, DET_NOMODEL, TOKEN, MakeEdge, jpeg

CLOUD_TOKEN = "cloudtoken_abcdefghij0123456789"
CLOUD_ONLY_DET = "det_" + "K" * 27
ME = {"email": "a@b.c", "username": "alice", "group": {"id": 1, "name": "acme"}, "is_superuser": False}


@dataclass
class FakeCloud:
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.down:
            raise httpx.ConnectError("down", request=request)
        if request.headers.get("x-api-token") not in (CLOUD_TOKEN, TOKEN):
            return httpx.Response(401, json={"detail": "bad token", "code": "unauthenticated"})
        path = request.url.path
        if path == "/device-api/v1/me":
            return httpx.Response(200, json=ME)
        if path.startswith("/device-api/v1/detectors/"):
            detector_id = path.rsplit("/", 1)[1]
            if detector_id not in (CLOUD_ONLY_DET, DET_NOMODEL):
                return httpx.Response(404, json={"detail": "no", "code": "not_found"})
            return httpx.Response(
                200,
                json={
                    "id": detector_id,
                    "type": "detector",
                    "created_at": datetime.now(UTC).isoformat(),
                    "name": "cloud det",
                    "query": "From the cloud?",
                    "group_name": "g",
                    "confidence_threshold": 0.75,
                    "patience_time": 30,
                    "metadata": None,
                    "mode": "BINARY",
                    "mode_configuration": None,
                },
            )
        if path == "/device-api/v1/image-queries" and request.method == "POST":
            return httpx.Response(
                201, json={"id": "iq_cloud", "forwarded": dict(request.url.params), "bytes": len(request.content)}
            )
        if path.startswith("/device-api/v1/image-queries/"):
            return httpx.Response(200, json={"id": path.rsplit("/", 1)[1], "answered_by": "cloud"})
        return httpx.Response(404, json={"detail": "no", "code": "not_found"})


def test_tokens_are_checked_by_the_cloud_and_cached(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle, edge_tokens="")
    headers = {"x-api-token": CLOUD_TOKEN}
    assert edge.client.get("/device-api/v1/me", headers=headers).json() == ME
    assert edge.client.get("/device-api/v1/me", headers=headers).status_code == 200
    assert cloud.calls.count("GET /device-api/v1/me") == 1
    assert edge.client.get("/device-api/v1/me", headers={"x-api-token": "nope"}).status_code == 401
    # Known token keeps working while the cloud is down; an unseen one cannot be checked.
    cloud.down = True
    edge.state.tokens._cache[CLOUD_TOKEN] = type(edge.state.tokens._cache[CLOUD_TOKEN])(
        0.0, edge.state.tokens._cache[CLOUD_TOKEN].identity
    )
    assert edge.client.get("/device-api/v1/me", headers=headers).status_code == 200
    unseen = edge.client.get("/device-api/v1/me", headers={"x-api-token": "never_seen_token_123456"})
    assert unseen.status_code == 503
    assert unseen.json()["code"] == "cloud_unavailable"


def test_snippet_and_detectors_fall_through_to_the_cloud(make_edge: MakeEdge) -> None:
    edge = make_edge(cloud=FakeCloud().handle)
    headers = {"x-api-token": TOKEN}
    assert edge.client.get(f"/device-api/v1/api-tokens/by-snippet/{TOKEN[:20]}", headers=headers).status_code == 404
    assert edge.client.get(f"/device-api/v1/detectors/{DET_BINARY}", headers=headers).status_code == 404


def test_detector_known_only_to_the_cloud_is_answered_with_its_threshold(make_edge: MakeEdge) -> None:
    edge = make_edge(cloud=FakeCloud().handle)
    body = edge.submit(CLOUD_ONLY_DET, jpeg(204)).json()  # P(YES) = 0.8 > 0.75
    assert body["query"] == "From the cloud?"
    assert body["confidence_threshold"] == 0.75
    assert body["done_processing"] is True


def test_no_model_forwards_to_the_cloud_with_the_original_parameters(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle)
    image = jpeg(255)
    response = edge.submit(DET_NOMODEL, image, confidence_threshold="0.8", inspection_id="i-1")
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == "iq_cloud"
    assert body["forwarded"] == {"detector_id": DET_NOMODEL, "confidence_threshold": "0.8", "inspection_id": "i-1"}
    assert body["bytes"] == len(image)


def test_want_async_goes_to_the_cloud_and_to_the_outbox_when_it_is_down(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle)
    assert edge.submit(DET_BINARY, jpeg(255), want_async="True").json()["id"] == "iq_cloud"
    cloud.down = True
    body = edge.submit(DET_BINARY, jpeg(255), want_async="True").json()
    assert body["done_processing"] is False and body["result"]["from_edge"] is True
    assert [i.image_query_id for i in edge.state.outbox.pending(now=1e12)] == [body["id"]]
    # No model and no reachable cloud: nothing can answer.
    response = edge.submit(DET_NOMODEL, jpeg(255))
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_get_of_an_escalated_query_asks_the_cloud_for_news(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle)
    escalated = edge.submit(DET_BINARY, jpeg(128)).json()
    confident = edge.submit(DET_BINARY, jpeg(255)).json()
    headers = {"x-api-token": TOKEN}
    assert edge.client.get(f"/v1/image-queries/{escalated['id']}", headers=headers).json()["answered_by"] == "cloud"
    assert edge.client.get(f"/v1/image-queries/{confident['id']}", headers=headers).json() == confident
    cloud.down = True
    assert edge.client.get(f"/v1/image-queries/{escalated['id']}", headers=headers).json() == json.loads(
        json.dumps(escalated)
    )


def test_detector_metadata_is_refreshed_in_the_background(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle, detector_cache_ttl_s=0)
    for _ in range(3):
        assert edge.submit(CLOUD_ONLY_DET, jpeg(255)).status_code == 201
    fetches = cloud.calls.count(f"GET /device-api/v1/detectors/{CLOUD_ONLY_DET}")
    assert fetches >= 2  # first on the request path, then refreshes behind it


def test_the_edge_keeps_answering_from_edge_config_while_the_cloud_is_down(make_edge: MakeEdge) -> None:
    cloud = FakeCloud(down=True)
    edge = make_edge(cloud=cloud.handle)
    body = edge.submit(DET_BINARY, jpeg(255)).json()
    assert body["result"]["from_edge"] is True and body["done_processing"] is True
    escalated = edge.submit(DET_BINARY, jpeg(128)).json()
    assert escalated["done_processing"] is False
    assert [i.image_query_id for i in edge.state.outbox.pending(now=1e12)] == [escalated["id"]]
