"""``GET /device-api/v1/image-queries/{id}/explanation`` through the real gateway: real
nginx → real edge API → real inference service (a real ONNX brightness model), queries
submitted with the real ``groundlight`` SDK."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from groundlight import Groundlight
from PIL import Image

from tests.support.edge_stack import EdgeStack, edge_stack
from tests.support.procs import wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DET = "det_" + "Explain0Binary0Detector0001"


def _jpeg(grey: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (grey, grey, grey)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [{"detector_id": DET, "name": "bright", "query": "Is it bright?", "confidence_threshold": 0.8}],
    }
    with edge_stack(tmp_path_factory.mktemp("explain"), config, {DET: ("NO", "YES")}) as running_stack:
        wait_http(f"{running_stack.inference_url}/detectors/{DET}/ready", timeout=60)
        yield running_stack


def _explanation(stack: EdgeStack, image_query_id: str) -> httpx.Response:
    return httpx.get(
        f"{stack.gateway_url}/device-api/v1/image-queries/{image_query_id}/explanation",
        headers={"x-api-token": stack.token},
        timeout=10,
    )


def test_a_confident_edge_answer_explains_itself(stack: EdgeStack) -> None:
    gl = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    iq = gl.ask_ml(DET, _jpeg(255))
    response = _explanation(stack, iq.id)
    assert response.status_code == 200, response.text
    why = response.json()
    assert why["image_query_id"] == iq.id and why["detector_id"] == DET and why["answered_by"] == "edge"
    assert why["model"] == {
        "kind": "classifier",
        "mode": "BINARY",
        "primary_version": 1,
        "primary_model_id": f"brightness-{DET}",
        "oodd_version": None,
        "oodd_model_id": None,
    }
    assert why["label"] == "YES" and why["label"] == iq.result.label.value
    assert why["confidence"] == pytest.approx(iq.result.confidence) and why["confidence"] >= 0.8
    assert why["raw_primary_confidence"] == pytest.approx(why["confidence"])  # no OODD model: nothing adjusts it
    assert why["oodd_in_domain_score"] is None
    assert why["confidence_threshold"] == 0.8
    assert why["escalated"] is False and why["escalation_reason"] is None
    assert why["why"].endswith("answered at the edge")
    assert why["nearest_labeled_examples"] is None and "cannot be named" in why["nearest_labeled_examples_note"]


def test_an_escalated_answer_says_why(stack: EdgeStack) -> None:
    gl = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    iq = gl.submit_image_query(DET, _jpeg(128), wait=0)  # mid-grey: a coin toss for this model
    why = _explanation(stack, iq.id).json()
    assert why["confidence"] < 0.8 and why["confidence_threshold"] == 0.8
    assert why["escalated"] is True and why["escalation_reason"] == "low_confidence"
    assert why["why"].endswith("escalated for a human label")


def test_unknown_or_unauthorised_queries_get_a_clear_4xx(stack: EdgeStack) -> None:
    missing = _explanation(stack, "iq_" + "0" * 27)
    assert missing.status_code == 404 and "was not answered by this edge" in missing.json()["detail"]
    wrong = httpx.get(
        f"{stack.gateway_url}/device-api/v1/image-queries/iq_x/explanation",
        headers={"x-api-token": "wrong_token_0123456789abcdef"},
        timeout=10,
    )
    assert wrong.status_code == 401
