"""Browser test of the review page's heat-map overlay against the real cloud's overlay route.

A real anomaly model (trained by the training library in a few seconds) is active on a
binary detector; two synthetic metal surfaces with defects and one without are sent with
``human_review=ALWAYS``, so the model answers them and they wait for a person. One
Chromium run (``browser.mjs overlay``) reviews them: the page must show, over each
image, the very PNG that ``GET /v1/image-queries/{id}/overlay?kind=heatmap`` answers
(compared by SHA-256), lying exactly on the image at 1280x900, zoomed and panned, and at
390x844; ``O`` hides and shows it; ``A`` accepts the model's answer (stored as the
reviewer's label) and the detector filter's count drops without a reload; the next item
gets its own map. The map itself must be hot where the defect is (its pixel mask from the
generator) and cool elsewhere.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.frontend.tests.stack import (
    FRONTEND,
    cloud_api,
    ensure_built,
    make_token,
    require_tools,
    run_browser,
    upload_anomaly_model,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

OUTPUT = FRONTEND / "test-output" / "review-overlay"


@pytest.fixture(scope="module")
def built() -> None:
    require_tools("npm", "node", "chromium")
    ensure_built()


def _aligned(a: dict, b: dict) -> bool:
    return all(abs(a[k] - b[k]) < 1.0 for k in ("x", "y", "w", "h"))


def test_heat_map_of_the_overlay_route_lies_on_each_image(built: None, tmp_path: Path) -> None:
    from intellioptics_training.synthetic import encode_png, generate_anomaly

    with cloud_api(tmp_path) as cloud:
        reviewer = make_token(cloud, "reviewer-overlay", "reviewer")
        with cloud.client() as api:
            detector = api.post("/v1/detectors", json={"name": "sheet-metal", "query": "Is there a defect?"})
            detector.raise_for_status()
            detector_id = str(detector.json()["id"])
        upload_anomaly_model(cloud, detector_id, tmp_path)
        images = list(generate_anomaly("metal", 1, 2, seed=52, strength=4.0))
        masks = {}
        model_answers = {}
        with cloud.client() as api:
            for image in images:
                response = api.post(
                    "/v1/image-queries",
                    params={"detector_id": detector_id, "human_review": "ALWAYS"},
                    content=encode_png(image.rgb),
                    headers={"content-type": "image/png"},
                )
                response.raise_for_status()
                body = response.json()
                assert body["result"]["source"] == "ALGORITHM", "the anomaly model answered it"
                masks[body["id"]] = image.mask
                model_answers[body["id"]] = body["result"]["label"]

        result = run_browser(
            "overlay",
            {
                "baseUrl": cloud.base_url,
                "adminToken": cloud.admin_token,
                "reviewerToken": reviewer,
                "detectorId": detector_id,
            },
            OUTPUT,
            timeout=120,
        )
        assert result["console"] == [], "no console error, no refused overlay request"
        assert result["overlayResponses"], "the page asked the overlay route"
        assert all(r["status"] == 200 and "kind=heatmap" in r["url"] for r in result["overlayResponses"])

        shown = result["overlays"]
        with cloud.client() as api:

            def route_png(iq_id: str) -> bytes:
                response = api.get(f"/v1/image-queries/{iq_id}/overlay", params={"kind": "heatmap"})
                response.raise_for_status()
                return response.content

            for name, seen in shown.items():
                png = route_png(seen["iq"])
                assert seen["sha256"] == hashlib.sha256(png).hexdigest(), f"{name}: the route's own heat map"
                assert (seen["overlay"]["naturalW"], seen["overlay"]["naturalH"]) == (
                    seen["image"]["naturalW"],
                    seen["image"]["naturalH"],
                )
                assert _aligned(seen["overlay"], seen["image"]), f"{name}: the map lies on the image: {seen}"
            first = shown["first"]["iq"]
            assert shown["zoomed"]["iq"] == shown["again"]["iq"] == first
            assert shown["next"]["iq"] != first and shown["phone"]["iq"] == shown["next"]["iq"]
            # Each defect's map: hot on the defect's pixels (the generator's mask), cool elsewhere.
            defects = [iq for iq in {seen["iq"] for seen in shown.values()} if masks[iq].any()]
            assert defects, "at least one item with a defect was on screen"
            for iq in defects:
                heat = np.asarray(Image.open(io.BytesIO(route_png(iq))).convert("RGB")).astype(np.float32)
                redness = heat[..., 0] - heat[..., 2]
                assert redness[masks[iq]].mean() > redness[~masks[iq]].mean() + 100, f"{iq}: the map marks the defect"
            # A stored the model's own answer as the reviewer's label.
            assert result["accepted"] == first
            labeled = api.get(f"/v1/image-queries/{first}").json()["result"]
            assert labeled["source"] == "USER" and labeled["label"] == model_answers[first]

    assert shown["zoomed"]["zoom"] > 1.5 and shown["zoomed"]["image"]["w"] > shown["first"]["image"]["w"] * 1.4
    assert shown["phone"]["image"]["w"] < 390
    assert "overlay off" in result["overlayOffHint"] and "overlay on" in shown["again"]["hint"]
    # The panel says the cloud's anomaly model answered, and against which threshold.
    assert "Cloud model" in result["overlayPanel"] and "threshold" in result["overlayPanel"]
    assert result["filterBefore"] == "sheet-metal (3)" and result["filterAfter"] == "sheet-metal (2)"
    assert result["progressAfter"] == "Item 2 of 3"
