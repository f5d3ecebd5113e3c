"""Browser test of the review page's box editor (COUNT and BOUNDING_BOX detectors).

One Chromium run (``browser.mjs boxes``) against the real cloud API process: boxes drawn,
moved and deleted with the mouse and keys, confirmed with Enter; the model's boxes
(pre-labels) confirmed with one key; more boxes than the detector allows refused by the
cloud with the message on screen; a typed count. Every label is then read back through the API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.frontend.tests.stack import (
    FRONTEND,
    Cloud,
    cloud_api,
    ensure_built,
    image_bytes,
    make_token,
    require_tools,
    run_browser,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

OUTPUT = FRONTEND / "test-output" / "review-boxes"
# Mouse positions land on whole pixels of a frame some hundred pixels wide.
TOLERANCE = 0.01
PRELABELS = [
    {"label": "bolt", "score": 0.74, "geometry": {"left": 0.2, "top": 0.3, "right": 0.45, "bottom": 0.6}},
]


@pytest.fixture(scope="module")
def built() -> None:
    require_tools("npm", "node", "chromium")
    ensure_built()


def _detector_with_images(cloud: Cloud, name: str, mode: str, config: dict, count: int) -> tuple[str, list[str]]:
    """A COUNT / BOUNDING_BOX detector with ``count`` queries in review (no model: all escalate)."""
    with cloud.client() as api:
        detector = api.post(
            "/v1/detectors",
            json={"name": name, "query": "Where are the bolts?", "mode": mode, "mode_configuration": config},
        )
        detector.raise_for_status()
        detector_id = str(detector.json()["id"])
        ids = []
        for seed in range(count):
            response = api.post(
                "/v1/image-queries",
                params={"detector_id": detector_id},
                content=image_bytes(seed),
                headers={"content-type": "image/jpeg"},
            )
            response.raise_for_status()
            ids.append(str(response.json()["id"]))
    return detector_id, ids


def _geometry(roi: dict) -> list[float]:
    g = roi["geometry"]
    return [g["left"], g["top"], g["right"], g["bottom"]]


def test_boxes_drawn_moved_deleted_and_confirmed(built: None, tmp_path: Path) -> None:
    with cloud_api(tmp_path) as cloud:
        reviewer = make_token(cloud, "reviewer-boxes", "reviewer")
        box_detector, box_iqs = _detector_with_images(
            cloud, "bolts-boxes", "BOUNDING_BOX", {"class_name": "bolt", "max_num_bboxes": 2}, 3
        )
        count_detector, count_iqs = _detector_with_images(
            cloud, "bolts-count", "COUNT", {"class_name": "bolt", "max_count": 5}, 1
        )
        result = run_browser(
            "boxes",
            {
                "baseUrl": cloud.base_url,
                "adminToken": cloud.admin_token,
                "reviewerToken": reviewer,
                "boxDetectorId": box_detector,
                "countDetectorId": count_detector,
                "prelabeledIq": box_iqs[1],
                "prelabels": PRELABELS,
            },
            OUTPUT,
            timeout=90,
        )
        assert result["console"] == [], "no console error beyond the refused label's 400"
        cases = result["boxCases"]
        assert set(cases) == {"edited", "prelabeled", "empty", "counted"}
        assert cases["prelabeled"] == box_iqs[1] and cases["counted"] == count_iqs[0]

        # Three boxes where the detector allows two: refused, said so, nothing stored, boxes kept.
        refused = result["refused"]
        assert "NOT saved" in refused["message"] and "max_num_bboxes is 2" in refused["message"]
        assert refused["iq"] == cases["edited"] and refused["source"] == "STILL_PROCESSING"
        assert refused["boxesBack"] == 3
        assert "1 box" in result["countShown"] and "4" in result["countShown"]

        with cloud.client() as api:

            def stored(iq_id: str) -> dict:
                return dict(api.get(f"/v1/image-queries/{iq_id}").json())

            edited = stored(cases["edited"])
            assert edited["result"]["label"] == "BOUNDING_BOX" and edited["result"]["source"] == "USER"
            # The first box as drawn; the second dragged by (+0.1, +0.05); the third deleted.
            assert [roi["label"] for roi in edited["rois"]] == ["bolt", "bolt"]
            for roi, expected in zip(edited["rois"], [[0.1, 0.1, 0.3, 0.3], [0.6, 0.55, 0.8, 0.75]], strict=True):
                assert _geometry(roi) == pytest.approx(expected, abs=TOLERANCE), edited["rois"]

            prelabeled = stored(cases["prelabeled"])
            assert prelabeled["result"]["label"] == "BOUNDING_BOX" and prelabeled["result"]["source"] == "USER"
            assert len(prelabeled["rois"]) == 1, "the model's box, confirmed as it came"
            assert _geometry(prelabeled["rois"][0]) == pytest.approx(_geometry(PRELABELS[0]), abs=1e-6)

            empty = stored(cases["empty"])
            assert empty["result"]["label"] == "NO_OBJECTS" and not empty["rois"]

            counted = stored(cases["counted"])
            assert counted["result"]["count"] == 4 and counted["result"]["source"] == "USER"
            assert not counted["rois"], "a typed count that differs from the boxes is sent without them"
            assert api.get("/v1/review/queue").json()["count"] == 0
