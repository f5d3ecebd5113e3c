"""Spending human labels well on the deployed edge (real nginx, edge API and inference
service with a real ONNX brightness model; queries from the real ``groundlight`` SDK):
a static camera's near-duplicates are escalated once per window, and a detector's
hourly escalation budget holds back the rest, each counted and explained."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from groundlight import Groundlight
from PIL import Image

from intellioptics_edge.spending import ESCALATION_BUDGET, NEAR_DUPLICATE, EscalationGate, difference_hash
from tests.support.edge_stack import EdgeStack, edge_stack
from tests.support.metrics import metric_value
from tests.support.procs import wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DUPES = "det_" + "Spend0NearDuplicates0000001"
BUDGET = "det_" + "Spend0HourlyBudget000000001"


def scene(seed: int, quality: int = 90, noise: float = 0.0) -> bytes:
    """A textured grey scene (its mean brightness sits near the model's 50 %: unsure), as
    a JPEG; ``noise`` adds sensor noise, as the next frame of the same static camera."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(60, 200, size=(12, 16)), np.ones((20, 20))).astype(np.float32)
    if noise:
        base += np.random.default_rng(seed + 1000).normal(0, noise, base.shape)
    pixels = np.clip(base, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([pixels] * 3, axis=2)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "edge_inference_configs": {
            "static_camera": {"near_duplicate_window_s": 600, "near_duplicate_distance": 6},
            "budgeted": {"max_escalations_per_hour": 2},
        },
        "detectors": [
            {"detector_id": DUPES, "edge_inference_config": "static_camera", "name": "dupes", "query": "Bright?"},
            {"detector_id": BUDGET, "edge_inference_config": "budgeted", "name": "budget", "query": "Bright?"},
        ],
    }
    models = {DUPES: ("NO", "YES"), BUDGET: ("NO", "YES")}
    with edge_stack(tmp_path_factory.mktemp("spending"), config, models) as running:
        for detector_id in models:
            wait_http(f"{running.inference_url}/detectors/{detector_id}/ready", timeout=60)
        yield running


def _get(stack: EdgeStack, path: str) -> httpx.Response:
    return httpx.get(f"{stack.gateway_url}{path}", headers={"x-api-token": stack.token}, timeout=10)


def _held_back_metric(stack: EdgeStack, detector_id: str, reason: str) -> float:
    text = httpx.get(f"{stack.edge_api_url}/metrics", timeout=10).text
    name = "intellioptics_edge_escalations_held_back_total"
    return metric_value(text, name, detector_id=detector_id, reason=reason) or 0.0


def test_a_static_cameras_near_duplicates_are_escalated_once(stack: EdgeStack) -> None:
    gl = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    first = gl.submit_image_query(DUPES, scene(1), wait=0)
    assert first.result.confidence < 0.9 and first.done_processing is False  # unsure: escalated
    # The same scene again, re-encoded and with sensor noise: held back, the edge's answer final.
    again = [gl.submit_image_query(DUPES, scene(1, quality=q, noise=3.0), wait=0) for q in (70, 85)]
    for iq in again:
        assert iq.done_processing is True and iq.result.label == first.result.label, iq
        why = _get(stack, f"/device-api/v1/image-queries/{iq.id}/explanation").json()
        assert why["held_back"] == NEAR_DUPLICATE and why["escalated"] is False, why
        assert first.id in why["why"], why
    # Another scene is new to the reviewers: escalated.
    other = gl.submit_image_query(DUPES, scene(2), wait=0)
    assert other.done_processing is False
    status = _get(stack, "/status.json").json()
    counts = next(d for d in status["detectors"] if d["detector_id"] == DUPES)
    assert counts["held_back"] == {NEAR_DUPLICATE: 2}, counts
    assert _held_back_metric(stack, DUPES, NEAR_DUPLICATE) == 2


def test_the_hourly_budget_holds_back_what_is_over_it(stack: EdgeStack) -> None:
    gl = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    answers = [gl.submit_image_query(BUDGET, scene(seed), wait=0) for seed in (11, 12, 13, 14)]
    assert [iq.done_processing for iq in answers] == [False, False, True, True]
    why = _get(stack, f"/device-api/v1/image-queries/{answers[2].id}/explanation").json()
    assert why["held_back"] == ESCALATION_BUDGET and "the budget is 2" in why["why"], why
    assert _held_back_metric(stack, BUDGET, ESCALATION_BUDGET) == 2
    # A caller who asks for a person still gets one: the budget is for the edge's own choice.
    asked = gl.submit_image_query(BUDGET, scene(15), wait=0, human_review="ALWAYS")
    assert asked.done_processing is False


def test_bad_spending_settings_are_a_clear_400(stack: EdgeStack) -> None:
    config = _get(stack, "/edge-config").json()
    for bad, field in (
        ({"near_duplicate_distance": 40}, "near_duplicate_distance"),
        ({"near_duplicate_window_s": -1}, "near_duplicate_window_s"),
        ({"max_escalations_per_hour": 0}, "max_escalations_per_hour"),
    ):
        changed = {**config, "edge_inference_configs": {**config["edge_inference_configs"], "budgeted": bad}}
        response = httpx.put(
            f"{stack.gateway_url}/edge-config", json=changed, headers={"x-api-token": stack.token}, timeout=10
        )
        assert response.status_code == 400 and field in response.text, response.text


def test_the_gate_forgets_after_its_window_and_its_hour() -> None:
    now = [0.0]
    gate = EscalationGate(clock=lambda: now[0])
    image = difference_hash(scene(3))
    assert image is not None and difference_hash(scene(3, quality=60, noise=3.0)) is not None
    near = (image ^ difference_hash(scene(3, quality=60, noise=3.0))).bit_count()  # type: ignore[operator]
    far = (image ^ difference_hash(scene(4))).bit_count()  # type: ignore[operator]
    assert near <= 6 < far, (near, far)
    settings = {"window_s": 60.0, "distance": 6, "per_hour": 3}
    assert gate.check("det", "iq_1", image, **settings) is None
    held = gate.check("det", "iq_2", image, **settings)
    assert held is not None and held.reason == NEAR_DUPLICATE and "iq_1" in held.detail
    now[0] = 61.0  # the window has passed: the same scene may be escalated again
    assert gate.check("det", "iq_3", image, **settings) is None
    assert gate.check("det", "iq_4", difference_hash(scene(5)), **settings) is None
    over = gate.check("det", "iq_5", difference_hash(scene(6)), **settings)
    assert over is not None and over.reason == ESCALATION_BUDGET
    now[0] = 3601.0 + 61.0  # an hour after the first escalations: budget again
    assert gate.check("det", "iq_6", difference_hash(scene(7)), **settings) is None
    assert gate.check("other", "iq_7", image, **settings) is None  # per detector
