"""With a cloud configured: tokens checked there, detectors fetched there, queries forwarded
when the edge cannot answer, and the outbox when the cloud is down."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from intellioptics_edge.outbox_sender import escalation_params
from intellioptics_edge.outbox_store import OutboxKind

from .conftest import ACCOUNT_ID, DET_BINARY, DET_NOMODEL, TOKEN, Edge, MakeEdge, jpeg

CLOUD_TOKEN = "cloudtoken_abcdefghij0123456789"
DEVICE_TOKEN = "devicetoken_0123456789abcdefghij"
CLOUD_ONLY_DET = "det_" + "K" * 27
ME = {
    "email": "a@b.c",
    "username": "alice",
    "group": {"id": ACCOUNT_ID, "name": "acme"},
    "is_superuser": False,
    "role": "admin",
    "account_id": ACCOUNT_ID,
}


@dataclass
class FakeCloud:
    down: bool = False
    calls: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.down:
            raise httpx.ConnectError("down", request=request)
        token = request.headers.get("x-api-token")
        if token not in (CLOUD_TOKEN, TOKEN, DEVICE_TOKEN) or token in self.revoked:
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
            body = {"id": "iq_cloud", "forwarded": dict(request.url.params), "bytes": len(request.content)}
            return httpx.Response(201, json={**body, "token": token})
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
    forwarded = body["forwarded"]
    assert forwarded.pop("image_query_id").startswith("iq_")  # given by the edge before sending
    assert forwarded == {"detector_id": DET_NOMODEL, "confidence_threshold": "0.8", "inspection_id": "i-1"}
    assert body["bytes"] == len(image)


def test_a_query_the_cloud_timed_out_on_is_escalated_under_the_id_it_was_sent_with(make_edge: MakeEdge) -> None:
    """Issue 11, finding 4: the cloud may have stored a query whose answer timed out; the
    fallback escalation must carry the same id so that the cloud sees one query, not two."""
    sent: list[str] = []
    cloud = FakeCloud()

    def slow_cloud(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/device-api/v1/image-queries" and request.method == "POST":
            sent.append(request.url.params["image_query_id"])
            raise httpx.ReadTimeout("the cloud database is stalled", request=request)
        return cloud.handle(request)

    edge = make_edge(cloud=slow_cloud)
    response = edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS")
    assert response.status_code == 201, response.text
    assert response.json()["id"] == sent[0]
    assert [i.image_query_id for i in edge.state.outbox.pending(now=1e12)] == sent
    refused = edge.submit(DET_NOMODEL, jpeg(255))  # no edge model: 503, naming the id it was sent with
    assert refused.status_code == 503
    assert f"image_query_id={sent[1]}" in refused.json()["detail"]


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


def test_human_review_always_goes_to_the_cloud_and_to_the_outbox_when_it_is_down(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    edge = make_edge(cloud=cloud.handle)
    forwarded = edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS")
    assert forwarded.status_code == 201
    assert forwarded.json()["id"] == "iq_cloud"
    params = forwarded.json()["forwarded"]
    assert params.pop("image_query_id").startswith("iq_")
    assert params == {"detector_id": DET_BINARY, "human_review": "ALWAYS"}
    assert edge.state.outbox.pending(now=1e12) == []

    cloud.down = True
    # Confident, yet not final: a person must still look at it.
    response = edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS")
    assert response.status_code == 201
    body = response.json()
    assert body["result"]["from_edge"] is True and body["result"]["label"] == "YES"
    assert body["done_processing"] is False
    [item] = edge.state.outbox.pending(now=1e12)
    assert item.kind is OutboxKind.ESCALATION and item.image_query_id == body["id"]
    assert item.metadata is not None and item.metadata["escalation_reason"] == "human_review_always"
    assert escalation_params(item, None)["human_review"] == "ALWAYS"  # the cloud queues it for review
    stored = edge.client.get(f"/v1/image-queries/{body['id']}", headers={"x-api-token": TOKEN}).json()
    assert stored["done_processing"] is False
    # Each such query reaches a person: no one-per-interval limit as for low confidence.
    edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS")
    assert len(edge.state.outbox.pending(now=1e12)) == 2


def test_a_caller_known_only_to_the_edge_is_forwarded_with_the_device_token(
    make_edge: MakeEdge, tmp_path: Path
) -> None:
    cloud = FakeCloud()
    cloud.revoked.add(TOKEN)  # the cloud never issued the edge's own token
    edge = make_edge(cloud=cloud.handle, device_token=DEVICE_TOKEN, models_dir=tmp_path / "models")
    response = edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS")
    assert response.status_code == 201 and response.json()["token"] == DEVICE_TOKEN
    assert edge.submit(DET_BINARY, jpeg(255), human_review="ALWAYS", token=CLOUD_TOKEN).json()["token"] == CLOUD_TOKEN


def _me(edge: Edge, token: str) -> httpx.Response:
    return edge.client.get("/device-api/v1/me", headers={"x-api-token": token})


def test_a_restart_during_a_cloud_outage_keeps_known_tokens_and_detectors(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    first = make_edge(cloud=cloud.handle, edge_tokens="")
    refused = "refused_token_0123456789abc"
    assert _me(first, refused).status_code == 401
    before = first.submit(CLOUD_ONLY_DET, jpeg(204), token=CLOUD_TOKEN).json()
    assert before["confidence_threshold"] == 0.75  # the cloud's detector, not in edge-config
    first.stop()

    cloud.down = True
    restarted = make_edge(cloud=cloud.handle, edge_tokens="")
    response = restarted.submit(CLOUD_ONLY_DET, jpeg(204), token=CLOUD_TOKEN)
    assert response.status_code == 201
    after = response.json()
    assert after["query"] == "From the cloud?" and after["confidence_threshold"] == 0.75
    assert after["done_processing"] is True and after["result"]["from_edge"] is True  # P(YES) = 0.8 > 0.75
    assert _me(restarted, CLOUD_TOKEN).json() == ME
    # Tokens the cloud never accepted cannot be checked now, as before the restart.
    for token in (refused, "never_seen_token_0123456789"):
        answer = _me(restarted, token)
        assert answer.status_code == 503 and answer.json()["code"] == "cloud_unavailable"
    # Only the digest is on disk (database and WAL), never the token.
    on_disk = b"".join(path.read_bytes() for path in restarted.settings.edge_data_dir.glob("edge.sqlite3*"))
    assert hashlib.sha256(CLOUD_TOKEN.encode()).hexdigest().encode() in on_disk
    assert CLOUD_TOKEN.encode() not in on_disk


def test_a_remembered_token_keeps_its_expiry_across_a_restart(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    first = make_edge(cloud=cloud.handle, edge_tokens="")
    assert _me(first, CLOUD_TOKEN).status_code == 200
    first.stop()
    restarted = make_edge(cloud=cloud.handle, edge_tokens="")
    assert _me(restarted, CLOUD_TOKEN).status_code == 200
    assert cloud.calls.count("GET /device-api/v1/me") == 1  # within token_cache_ttl_s: not asked again


def test_a_remembered_token_the_cloud_revoked_is_forgotten(make_edge: MakeEdge) -> None:
    cloud = FakeCloud()
    first = make_edge(cloud=cloud.handle, edge_tokens="", token_cache_ttl_s=0)
    assert _me(first, CLOUD_TOKEN).status_code == 200
    first.stop()
    cloud.revoked.add(CLOUD_TOKEN)
    second = make_edge(cloud=cloud.handle, edge_tokens="", token_cache_ttl_s=0)
    assert _me(second, CLOUD_TOKEN).status_code == 401  # expired, so asked: refused
    second.stop()
    cloud.down = True
    third = make_edge(cloud=cloud.handle, edge_tokens="", token_cache_ttl_s=0)
    assert _me(third, CLOUD_TOKEN).status_code == 503  # no longer "accepted before"
