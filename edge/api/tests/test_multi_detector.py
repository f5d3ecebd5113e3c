"""``POST /device-api/v1/image-queries/multi``: one image for several detectors through
the deployed edge (nginx, the edge API, the real inference service), each detector's
query through the whole decision tree, one model call for all of them. Two detectors sit
on the real EfficientNet-Lite0 export with their own heads (one backbone pass between
them), a third is a brightness model, a fourth is configured with no model installed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from intellioptics_inference.bench import bench_jpeg, default_backbone, write_bench_detector
from tests.support.edge_stack import EdgeStack, edge_stack
from tests.support.metrics import metric_value

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B, BRIGHT, EMPTY = (f"det_Multi{name}000000000000000001" for name in ("Aaaa", "Bbbb", "Cccc", "Dddd"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    if not default_backbone().is_file():
        pytest.fail(f"{default_backbone()} is missing: run `make backbone` (make test builds it)")
    base = tmp_path_factory.mktemp("multi-edge")
    write_bench_detector(base / "models", A, default_backbone(), oodd=True, seed=1)
    write_bench_detector(base / "models", B, default_backbone(), oodd=False, seed=2)
    entry = {"edge_inference_config": "no_cloud", "query": "Is it defective?", "confidence_threshold": 0.5}
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [{"detector_id": d, "name": d[-6:], **entry} for d in (A, B, BRIGHT, EMPTY)],
    }
    with edge_stack(base, config, {BRIGHT: ("NO", "YES")}, models_dir=base / "models") as running:
        yield running


def _post(stack: EdgeStack, detector_ids: list[str], image: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway_url}/device-api/v1/image-queries/multi",
        params={"detector_id": detector_ids, **params},
        content=image,
        headers={"x-api-token": stack.token, "content-type": "image/jpeg"},
        timeout=60,
    )


def _counter(stack: EdgeStack, name: str) -> float:
    value = metric_value(httpx.get(f"{stack.inference_url}/metrics", timeout=10).text, name)
    assert value is not None, f"{name} not in the inference service's metrics"
    return value


def test_one_image_many_detectors_each_answered_as_alone_and_stored(stack: EdgeStack) -> None:
    image = bench_jpeg()
    metadata = base64.urlsafe_b64encode(json.dumps({"stream": "line-3"}).encode()).decode()
    asked = [A, BRIGHT, EMPTY, B]
    calls = _counter(stack, "intellioptics_inference_multi_calls_total")
    runs = _counter(stack, "intellioptics_inference_multi_backbone_runs_total")
    response = _post(stack, asked, image, metadata=metadata)
    assert response.status_code == 200, response.text
    # One model call for the three that have models: A and B share one backbone pass, the
    # brightness model (another graph) is answered alone within it.
    assert _counter(stack, "intellioptics_inference_multi_calls_total") == calls + 1
    assert _counter(stack, "intellioptics_inference_multi_backbone_runs_total") == runs + 2
    results = response.json()["results"]
    assert [r["detector_id"] for r in results] == asked
    by_id = {r["detector_id"]: r for r in results}
    # No model for EMPTY and no cloud: its own 503, the others answered.
    assert by_id[EMPTY]["status_code"] == 503 and "No model is ready" in by_id[EMPTY]["error"]["detail"]
    headers = {"x-api-token": stack.token}
    for detector_id in (A, B, BRIGHT):
        entry = by_id[detector_id]
        assert entry["status_code"] == 201, entry
        query = entry["image_query"]
        assert query["detector_id"] == detector_id and query["id"].startswith("iq_")
        assert query["metadata"] == {"stream": "line-3"}
        # The same image alone gives the same answer.
        alone = httpx.post(
            f"{stack.gateway_url}/device-api/v1/image-queries",
            params={"detector_id": detector_id},
            content=image,
            headers={**headers, "content-type": "image/jpeg"},
            timeout=30,
        )
        assert alone.status_code == 201, alone.text
        assert alone.json()["result"]["label"] == query["result"]["label"]
        assert alone.json()["result"]["confidence"] == pytest.approx(query["result"]["confidence"], abs=1e-5)
        # And the multi query was recorded like any other.
        stored = httpx.get(
            f"{stack.gateway_url}/device-api/v1/image-queries/{query['id']}", headers=headers, timeout=10
        )
        assert stored.status_code == 200 and stored.json()["id"] == query["id"]
    assert by_id[A]["image_query"]["result"]["confidence"] != by_id[B]["image_query"]["result"]["confidence"]


def test_bad_multi_requests_get_clear_errors(stack: EdgeStack) -> None:
    image = bench_jpeg()
    cases = [
        ([], {}, image, "image/jpeg", 400, "Name 1 to 32 detectors"),
        ([A, A], {}, image, "image/jpeg", 400, "named twice"),
        ([A, B], {"image_query_id": "iq_2Hk000000000000000000000001"}, image, "image/jpeg", 400, "leave it out"),
        ([A, B], {}, b"\xff\xd8 not a jpeg", "image/jpeg", 400, "image"),
        ([A, B], {}, image, "text/plain", 415, "Content-Type"),
        ([A, "not-an-id"], {}, image, "image/jpeg", 400, "not a detector id"),
    ]
    for ids, params, body, content_type, status, words in cases:
        response = httpx.post(
            f"{stack.gateway_url}/device-api/v1/image-queries/multi",
            params={"detector_id": ids, **params},
            content=body,
            headers={"x-api-token": stack.token, "content-type": content_type},
            timeout=30,
        )
        assert response.status_code == status, (ids, params, response.text)
        assert words.lower() in response.json()["detail"].lower(), (ids, response.text)
    anonymous = httpx.post(
        f"{stack.gateway_url}/device-api/v1/image-queries/multi", params={"detector_id": [A]}, content=image
    )
    assert anonymous.status_code == 401
