"""The two RGB + depth bodies, read into (image, content type, depth), and their wiring
into the rule stage, on the app in-process (the real processes: test_depth_edge.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from intellioptics_common.errors import ImageDecodeError, InvalidInputError
from intellioptics_common.rgbd import form_parts, image_content_type, is_multipart, rgbd_json

from .conftest import DET_BINARY, TOKEN, MakeEdge, base_config, jpeg

SUBMIT = "/device-api/v1/image-queries"


def png(size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multipart_parts_become_the_pair() -> None:
    pair = form_parts([("image", png(), "application/octet-stream"), ("depth", b"d", None)])
    assert pair.content_type == "image/png" and pair.depth == b"d"  # the type the bytes show
    assert form_parts([("image", jpeg(10), "image/jpeg")]).depth is None  # an image-only query
    assert is_multipart("multipart/form-data; boundary=x") and not is_multipart("image/jpeg")
    for items, message in [
        ([("depth", b"d", None)], "no `image` part"),
        ([("image", png(), None), ("image", png(), None)], "Unexpected multipart part 'image'"),
        ([("image", png(), None), ("rgb", png(), None)], "Unexpected multipart part 'rgb'"),
        ([("image", png(), None), ("depth", None, None)], "`depth` part must be a file part"),
    ]:
        with pytest.raises(InvalidInputError) as refused:
            form_parts(items)
        assert message in refused.value.public_message
    with pytest.raises(ImageDecodeError):
        image_content_type(b"not an image", None)


def test_the_json_form_decodes_both_halves() -> None:
    image = png()
    body = {"rgb_base64": "data:image/png;base64," + base64.b64encode(image).decode(), "depth_base64": "AAAA"}
    pair = rgbd_json(_json(body), 1024)
    assert pair.image == image and pair.content_type == "image/png" and pair.depth == b"\0\0\0"
    for raw, message in [
        (b"not json", "not valid JSON"),
        (b'{"rgb_base64": "AAAA"}', "depth_base64: Field required"),
        (_json({**body, "detector_id": "det_x"}), "detector_id: Extra inputs are not permitted"),
        (_json({**body, "depth_base64": "%%"}), "depth_base64 is not valid base64"),
    ]:
        with pytest.raises(InvalidInputError) as refused:
            rgbd_json(raw, 1024)
        assert message in refused.value.public_message


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def bead(height_mm: float) -> np.ndarray:
    grid_y, grid_x = np.mgrid[0:60, 0:80]
    depth = 500.0 + 0.02 * grid_x + 0.01 * grid_y
    depth[25:35, :] -= height_mm
    return depth.astype(np.float32)


def test_the_rule_stage_reads_the_submitted_depth(make_edge: MakeEdge) -> None:
    config = base_config()
    rule = {"check": "depth_height", "roi": [0, 0.2, 1, 0.8], "target_mm": 2.0, "tolerance_mm": 0.3}
    config["detectors"][0]["rules"] = [rule]
    edge = make_edge(config)
    token = {"x-api-token": TOKEN}
    params = {"detector_id": DET_BINARY}
    files = {"image": ("a.png", png(), "image/png"), "depth": ("d.npy", npy(bead(1.0)))}
    answer = edge.client.post(SUBMIT, params=params, files=files, headers=token)
    assert answer.status_code == 201, answer.text
    assert answer.json()["pipeline"]["check"] == "depth_height" and answer.json()["result"]["label"] == "YES"
    assert edge.inference.calls == []  # a sure rule: no model ran
    body = {"rgb_base64": base64.b64encode(png()).decode(), "depth_base64": base64.b64encode(npy(bead(2.0))).decode()}
    answer = edge.client.post(f"{SUBMIT}/rgbd", params=params, json=body, headers=token)
    assert answer.status_code == 201 and answer.json()["result"]["label"] == "NO"
    # A depth map of another frame is refused before the rules run.
    files["depth"] = ("d.npy", npy(bead(2.0)[:, :40]))
    refused = edge.client.post(SUBMIT, params=params, files=files, headers=token)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_depth"
    assert "aspect ratios differ" in refused.json()["detail"]
