"""Browser test of the review page's depth view against the real cloud's depth route.

Two queries of one detector wait for a person (``human_review=ALWAYS``): the first sent as
an RGB + depth camera sends it (multipart ``image`` + ``depth``, a plate with a dent), the
second as an image alone. One Chromium run (``browser.mjs depth``) reviews them: nothing
is fetched until ``D``; then the page shows, in place of the first image, the very PNG
that ``GET /v1/image-queries/{id}/depth?view=colour`` answers (compared by SHA-256), where
the image was and at its size; the view stays on for the second item, which says it has
no depth map and keeps its image; ``D`` turns it off.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from cloud.frontend.tests.stack import (
    FRONTEND,
    cloud_api,
    ensure_built,
    image_bytes,
    make_token,
    require_tools,
    run_browser,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

OUTPUT = FRONTEND / "test-output" / "review-depth"


def dented_plate(size: tuple[int, int] = (640, 480)) -> bytes:
    """A tilted plate 500 mm away with a 1 mm dent, as a float32 .npy (the image's size)."""
    grid_y, grid_x = np.mgrid[0 : size[1], 0 : size[0]]
    depth = 500.0 + 0.02 * grid_x + 0.01 * grid_y
    depth += 1.0 * np.exp(-((grid_x - 320) ** 2 + (grid_y - 240) ** 2) / (2 * 30.0**2))
    buffer = io.BytesIO()
    np.save(buffer, depth.astype(np.float32))
    return buffer.getvalue()


def test_d_shows_the_depth_routes_false_colour_view_in_place_of_the_image(tmp_path: Path) -> None:
    require_tools("npm", "node", "chromium")
    ensure_built()
    with cloud_api(tmp_path) as cloud:
        reviewer = make_token(cloud, "reviewer-depth", "reviewer")
        with cloud.client() as api:
            created = api.post("/v1/detectors", json={"name": "dents", "query": "Is there a dent?"})
            created.raise_for_status()
            detector_id = str(created.json()["id"])
            params = {"detector_id": detector_id, "human_review": "ALWAYS"}
            with_depth = api.post(
                "/v1/image-queries",
                params=params,
                files={"image": ("frame.jpg", image_bytes(1), "image/jpeg"), "depth": ("d.npy", dented_plate(), "x")},
            )
            with_depth.raise_for_status()
            plain = api.post(
                "/v1/image-queries", params=params, content=image_bytes(2), headers={"content-type": "image/jpeg"}
            )
            plain.raise_for_status()
            colour = api.get(f"/v1/image-queries/{with_depth.json()['id']}/depth", params={"view": "colour"})
            colour.raise_for_status()

        result = run_browser(
            "depth",
            {"baseUrl": cloud.base_url, "reviewerToken": reviewer, "detectorId": detector_id},
            OUTPUT,
            timeout=120,
        )
    assert result["console"] == [], "no console error but the expected 404"
    assert result["requestsBeforeD"] == 0, "nothing is fetched for a reviewer who never presses D"
    shown = result["depth"]
    first, second = with_depth.json()["id"], plain.json()["id"]
    assert shown["image"]["iq"] == shown["depth"]["iq"] == first and shown["none"]["iq"] == second
    assert shown["depth"]["sha256"] == hashlib.sha256(colour.content).hexdigest(), "the route's own view"
    assert shown["depth"]["alt"] == f"Depth map of {first}" and shown["depth"]["natural"] == {"w": 640, "h": 480}
    assert shown["depth"]["rect"] == pytest.approx(shown["image"]["rect"], abs=1.0), "where the image was"
    assert shown["image"]["hint"] == "D depth off" and shown["depth"]["hint"] == "D depth on"
    assert shown["none"]["hint"] == "D depth no depth map for this image"
    assert shown["none"]["alt"] == f"Image of {second}" and shown["off"]["hint"] == "D depth off"
    assert [(r["status"], r["url"].split("?")[1]) for r in result["depthResponses"]] == [
        (200, "view=colour"),
        (404, "view=colour"),
    ]
    assert [entry["text"] for entry in result["expectedConsole"]] == [
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    ]
