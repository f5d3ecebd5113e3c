"""Browser tests of the review page's hard cases: no label is lost, the defect can be seen.

One Chromium run against the real cloud API process (``browser.mjs failsave+viewer``):

- the reviewer's token is revoked through the API mid-session: the page asks to sign in
  again, says the label is not saved, and sends it once a new token is given;
- every label write answers 503 (injected in Chromium's network layer with ``page.route``:
  the real cloud has no switch to fail on demand): the item comes back on screen marked
  unsaved (at 390x844: the message on screen), and saves when answered again after the
  fault is lifted;
- Chromium goes offline (``context.setOffline``): the same;
- the image is scaled up to fill the frame, wheel zoom and drag pan stay from item to item,
  M toggles smoothing and R resets; the prediction panel says no model answered and which
  version is active now, updated without a reload when one is activated.

The test then reads every label back through the API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.frontend.tests.stack import (
    FRONTEND,
    cloud_api,
    ensure_built,
    make_token,
    model_manifest,
    require_tools,
    run_browser,
    submit_images,
    upload_model,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

OUTPUT = FRONTEND / "test-output" / "review-failures"


@pytest.fixture(scope="module")
def built() -> None:
    require_tools("npm", "node", "chromium")
    ensure_built()


def test_no_label_lost_and_the_defect_visible(built: None, tmp_path: Path) -> None:
    with cloud_api(tmp_path) as cloud:
        first = make_token(cloud, "reviewer-revoked", "reviewer")
        second = make_token(cloud, "reviewer-again", "reviewer")
        detector_id, iq_ids = submit_images(cloud, "failsave-weld", "Is there a crack on the weld?", 8)
        # A version activated while the reviewer works (by the browser scenario, through the API):
        # the images say "no model", and the panel turns "no model yet" into "v1 active now".
        upload_model(cloud, detector_id, model_manifest(["NO", "YES"], {"accuracy": 0.8}, 20), seed=1)
        with cloud.client() as api:
            tokens = api.get("/v1/tokens").json()
        first_id = next(t["id"] for t in tokens if t["name"] == "reviewer-revoked")

        result = run_browser(
            "failsave+viewer",
            {
                "baseUrl": cloud.base_url,
                "adminToken": cloud.admin_token,
                "reviewerToken": first,
                "reviewerTokenId": first_id,
                "reviewerToken2": second,
                "detectorId": detector_id,
            },
            OUTPUT,
        )
        assert result["console"] == [], "no console error beyond the ones each fault causes on purpose"
        cases = result["cases"]
        # While signed out the page said the label waits, not that it was saved.
        assert "NOT saved" in cases["revoked"]["statusWhileSignedOut"]
        assert "503" in cases["serverError"]["failure"] and "NOT saved" in cases["serverError"]["failure"]
        assert "could not be reached" in cases["offline"]["failure"]
        with cloud.client() as api:
            for case in cases.values():
                iq = api.get(f"/v1/image-queries/{case['iq']}").json()
                assert iq["result"]["label"] == case["label"], (case, iq)
                assert iq["result"]["source"] != "STILL_PROCESSING"
            labeled = {case["iq"] for case in cases.values()}
            assert labeled <= set(iq_ids) and len(labeled) == 4
            waiting = {i["image_query_id"] for i in api.get("/v1/review/queue", params={"limit": 50}).json()["items"]}
            assert not waiting & labeled, "stored labels leave the queue"

    # At 390x844 the unsaved item's message is on screen, the answer buttons too (to answer it
    # again), and the page does not pan sideways.
    phone = result["failurePhone"]
    assert phone["top"] >= 0 and phone["bottom"] <= phone["innerHeight"] and phone["scrollWidth"] <= 390, phone
    assert phone["answersBottom"] <= phone["innerHeight"], phone
    fitted = result["fitted"]
    # 640x480 images in a larger frame: scaled up until they touch the frame's edges.
    assert fitted["imgW"] > fitted["naturalW"]
    assert abs(fitted["imgW"] - fitted["frameW"]) < 2 or abs(fitted["imgH"] - fitted["frameH"]) < 2
    assert result["zoomed"]["zoom"] > 1.5
    # The next item keeps the zoom and the pan; M switched to pixel-exact scaling; R resets.
    assert result["nextItem"]["zoom"] == result["zoomed"]["zoom"]
    assert result["nextItem"]["transform"] == result["zoomedTransform"]
    assert result["zoomed"]["smooth"] == "smooth" and result["nextItem"]["smooth"] == "pixelated"
    assert result["reset"]["zoom"] == 1
    assert "no model yet" in result["predictionBefore"]
    assert "none: no model answered" in result["prediction"]
    assert "v1 active now" in result["prediction"]
    assert "UNCLEAR" not in result["prediction"]
