"""RGB + depth image queries through the deployed edge: nginx, the edge API and the real
inference service serving a package the training library trained with depth.

Both bodies (multipart parts ``image`` + ``depth``, and the JSON form of
``POST image-queries/rgbd``) answer as the training library's own scorer does on the
same pair; a depth detector refuses an image without depth, and every unusable depth map
is a 400 that says what to send; the rule stage's depth checks answer from the submitted
map; the SDK's raw image body works as it always did.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from groundlight import Groundlight
from groundlight_openapi_client.exceptions import ApiException
from PIL import Image

from intellioptics_inference.bench import default_backbone
from tests.support.depth_models import THRESHOLD, DepthCase, cases, library_answer, npy, train_depth_package
from tests.support.edge_stack import EdgeStack, edge_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The SDK's urllib3 pool may still hold a socket when a test ends.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

DET_DEPTH = "det_" + "DepthDentModel".ljust(27, "0")
DET_BEAD = "det_" + "DepthBeadRules".ljust(27, "0")
DET_PLAIN = "det_" + "PlainBrightness".ljust(27, "0")
SUBMIT = "/device-api/v1/image-queries"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    if not default_backbone().is_file():
        pytest.fail(f"{default_backbone()} is missing: run `make backbone` (make test builds it)")
    base = tmp_path_factory.mktemp("depth-edge")
    train_depth_package(base / "models", DET_DEPTH)
    bead_rule = {"check": "depth_height", "roi": [0.0, 0.2, 1.0, 0.8], "target_mm": 2.0, "tolerance_mm": 0.3}
    config = {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
        "detectors": [
            {
                "detector_id": DET_DEPTH,
                "edge_inference_config": "no_cloud",
                "name": "dent",
                "query": "Is there a dent?",
                "confidence_threshold": THRESHOLD,
            },
            {
                "detector_id": DET_BEAD,
                "edge_inference_config": "no_cloud",
                "name": "bead",
                "query": "Is the bead out of tolerance?",
                "rules": [bead_rule],
            },
            {"detector_id": DET_PLAIN, "edge_inference_config": "no_cloud", "name": "bright", "query": "Bright?"},
        ],
    }
    models = {DET_BEAD: ("NO", "YES"), DET_PLAIN: ("NO", "YES")}
    with edge_stack(base, config, models, models_dir=base / "models") as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: EdgeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, headers={"x-api-token": stack.token}, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def pairs() -> list[DepthCase]:
    return cases(2, seed=9)


def multipart(client: httpx.Client, detector_id: str, image: bytes, depth: bytes | None) -> httpx.Response:
    files = {"image": ("frame.png", image, "image/png")}
    if depth is not None:
        files["depth"] = ("frame_depth.npy", depth, "application/octet-stream")
    return client.post(SUBMIT, params={"detector_id": detector_id}, files=files)


def rgbd(
    client: httpx.Client, detector_id: str, image: bytes, depth: bytes, prefix: str = "/device-api"
) -> httpx.Response:
    body = {"rgb_base64": base64.b64encode(image).decode(), "depth_base64": base64.b64encode(depth).decode()}
    return client.post(f"{prefix}/v1/image-queries/rgbd", params={"detector_id": detector_id}, json=body)


def test_both_bodies_answer_like_the_training_library(stack: EdgeStack, client: httpx.Client, pairs) -> None:
    for case in pairs:
        reference = library_answer(stack.models_dir, DET_DEPTH, case.rgb_png, case.depth_npy)
        assert reference.label == case.label
        for response in (
            multipart(client, DET_DEPTH, case.rgb_png, case.depth_npy),
            rgbd(client, DET_DEPTH, case.rgb_png, case.depth_npy),
            rgbd(client, DET_DEPTH, case.rgb_png, case.depth_npy, prefix=""),  # the SDK's /v1 paths too
        ):
            assert response.status_code == 201, response.text
            answer = response.json()
            assert answer["result"]["label"] == reference.label
            assert answer["result"]["confidence"] == pytest.approx(reference.confidence, abs=1e-4)
            assert answer["result"]["from_edge"] is True and answer["pipeline"]["method"] == "ml"
            explanation = client.get(f"{SUBMIT}/{answer['id']}/explanation").json()
            assert explanation["oodd_in_domain_score"] == pytest.approx(reference.in_domain, abs=1e-4)
            stored = client.get(f"{SUBMIT}/{answer['id']}/image")
            assert stored.content == case.rgb_png and stored.headers["content-type"] == "image/png"
    # The depth map decides: the YES frame with the NO frame's flat map answers NO.
    yes = next(c for c in pairs if c.label == "YES")
    no = next(c for c in pairs if c.label == "NO")
    assert multipart(client, DET_DEPTH, yes.rgb_png, no.depth_npy).json()["result"]["label"] == "NO"
    # 16-bit PNG depth works the same way (the library on the same PNG is the reference).
    reference = library_answer(stack.models_dir, DET_DEPTH, yes.rgb_png, yes.depth_png)
    answer = multipart(client, DET_DEPTH, yes.rgb_png, yes.depth_png).json()
    assert answer["result"]["confidence"] == pytest.approx(reference.confidence, abs=1e-4)


def test_a_depth_detector_refuses_an_image_without_depth(stack: EdgeStack, client: httpx.Client, pairs) -> None:
    image = pairs[0].rgb_png
    raw = client.post(SUBMIT, params={"detector_id": DET_DEPTH}, content=image, headers={"content-type": "image/png"})
    for response in (raw, multipart(client, DET_DEPTH, image, None)):
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "depth_required"
        assert "`depth` part" in response.json()["detail"]
    # The SDK sends the raw image: it gets the same 400.
    sdk = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    with pytest.raises(ApiException) as refused:
        sdk.submit_image_query(DET_DEPTH, image, wait=0)
    assert refused.value.status == 400 and "depth_required" in str(refused.value.body)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unusable_depth_maps_are_400s_that_say_what_to_send(client: httpx.Client, pairs) -> None:
    case = pairs[0]
    good = case.depth_mm
    nan = good.copy()
    nan[5:9, 5:9] = np.nan
    bad = [
        ("another frame's size", npy(good[:200, :]), "aspect ratios differ"),
        ("NaN", npy(nan), "NaN or infinite values; send 0 for pixels without a reading"),
        ("all zeros", npy(np.zeros_like(good)), "all zeros"),
        ("8-bit PNG", _png(np.full(good.shape, 120, dtype=np.uint8)), "send a single-channel 16-bit PNG in mm"),
        ("garbage", b"\x00garbage, not a depth map", "neither a readable PNG nor a .npy array"),
    ]
    for what, depth, message in bad:
        # Refused before the rule stage or the model: on the model's detector and the rules' alike.
        for detector_id in (DET_DEPTH, DET_BEAD):
            for response in (
                multipart(client, detector_id, case.rgb_png, depth),
                rgbd(client, detector_id, case.rgb_png, depth),
            ):
                assert response.status_code == 400, (what, response.text)
                assert response.json()["code"] == "invalid_depth", what
                assert message in response.json()["detail"], (what, response.json())


def test_bodies_of_another_shape_are_400s_that_say_what_to_send(client: httpx.Client, pairs) -> None:
    image = pairs[0].rgb_png
    params = {"detector_id": DET_DEPTH}
    no_image = client.post(SUBMIT, params=params, files={"depth": ("d.npy", pairs[0].depth_npy)})
    assert no_image.status_code == 400 and "no `image` part" in no_image.json()["detail"]
    extra = client.post(SUBMIT, params=params, files={"image": ("a.png", image), "mask": ("m.png", image)})
    assert extra.status_code == 400 and "Unexpected multipart part 'mask'" in extra.json()["detail"]
    text = client.post(SUBMIT, params=params, files={"image": ("a.png", image)}, data={"depth": "500"})
    assert text.status_code == 400 and "`depth` part must be a file part" in text.json()["detail"]
    missing = client.post(f"{SUBMIT}/rgbd", params=params, json={"rgb_base64": base64.b64encode(image).decode()})
    assert missing.status_code == 400 and "depth_base64" in missing.json()["detail"]
    bad_base64 = client.post(f"{SUBMIT}/rgbd", params=params, json={"rgb_base64": "%%%", "depth_base64": "AAAA"})
    assert bad_base64.status_code == 400 and "rgb_base64 is not valid base64" in bad_base64.json()["detail"]
    form = client.post(f"{SUBMIT}/rgbd", params=params, content=b"rgb_base64=x", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    no_detector = rgbd(client, "", image, pairs[0].depth_npy)
    assert no_detector.status_code == 400 and "detector_id is required" in no_detector.json()["detail"]


def bead(height_mm: float, size: tuple[int, int] = (80, 60)) -> np.ndarray:
    """A tilted plate 500 mm away with a bead across the middle, ``height_mm`` nearer."""
    width, height = size
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    depth = 500.0 + 0.02 * grid_x + 0.01 * grid_y
    depth[height // 2 - 5 : height // 2 + 5, :] -= height_mm
    return depth.astype(np.float32)


def test_depth_rules_answer_from_the_submitted_depth(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (90, 90, 90)).save(buffer, format="PNG")
    image = buffer.getvalue()  # twice the depth map's resolution, the same frame
    within = multipart(client, DET_BEAD, image, npy(bead(2.05))).json()
    assert within["result"]["label"] == "NO" and within["pipeline"]["method"] == "rule-based"
    assert within["pipeline"]["check"] == "depth_height"
    assert within["pipeline"]["measured"] == pytest.approx(2.05, abs=0.02)
    low = rgbd(client, DET_BEAD, image, npy(bead(1.2))).json()
    assert low["result"]["label"] == "YES" and low["pipeline"]["measured"] == pytest.approx(1.2, abs=0.02)
    # Without depth the depth check is skipped and the model answers.
    plain = client.post(SUBMIT, params={"detector_id": DET_BEAD}, content=image, headers={"content-type": "image/png"})
    assert plain.status_code == 201 and plain.json()["pipeline"]["method"] == "hybrid"


def test_the_sdk_raw_image_path_is_unchanged(stack: EdgeStack) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 250, 250)).save(buffer, format="JPEG")
    sdk = Groundlight(endpoint=stack.gateway_url, api_token=stack.token)
    iq = sdk.submit_image_query(DET_PLAIN, buffer.getvalue(), wait=0)
    assert iq.result.label.value == "YES" and iq.result.from_edge is True
    assert sdk.get_image_query(iq.id).id == iq.id
