"""RGB + depth image queries at the cloud: the bodies the edge takes (multipart parts,
the JSON form, a batch item's ``depth``), the depth stored as sent beside the image, read
back as sent, as a 16-bit PNG or in false colour, the dataset saying which examples have
one, a depth model answering from it, and the 400s and 404s that say what to send."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from intellioptics_common.depth import encode_depth_png, read_depth
from intellioptics_common.ids import new_id

SIZE = (80, 60)  # the image, width x height


def png(size: tuple[int, int] = SIZE, value: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def plate(distance_mm: float = 500.0, shape: tuple[int, int] = (SIZE[1], SIZE[0])) -> np.ndarray:
    """A tilted plate with a 0.7 mm dent: a fraction of a mm that whole-mm PNGs round away."""
    grid_y, grid_x = np.mgrid[0 : shape[0], 0 : shape[1]]
    depth = distance_mm + 0.05 * grid_x + 0.02 * grid_y
    depth[20:30, 30:45] += 0.7
    return depth.astype(np.float32)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def submit_pair(api, detector_id: str, image: bytes, depth: bytes, prefix: str = "/v1", **params):  # type: ignore[no-untyped-def]
    files = {"image": ("frame.png", image, "image/png"), "depth": ("frame_depth.npy", depth, "application/x-npy")}
    return api.post(f"{prefix}/image-queries", params={"detector_id": detector_id, **params}, files=files)


def test_the_depth_is_stored_as_sent_and_read_back_three_ways(admin, settings, helpers) -> None:
    detector = admin.create_detector()
    depth = plate()
    sent = npy(depth)
    for prefix in ("/v1", "/device-api/v1"):  # the SDK-compatible route takes it the same way
        response = submit_pair(admin, detector["id"], png(), sent, prefix=prefix)
        assert response.status_code == 201, response.text
    iq_id = response.json()["id"]

    original = admin.get(f"/v1/image-queries/{iq_id}/depth", params={"view": "original"})
    assert original.status_code == 200 and original.content == sent  # the fractions of a mm kept
    assert original.headers["content-type"] == "application/x-npy"
    as_png = admin.get(f"/v1/image-queries/{iq_id}/depth")
    assert as_png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(as_png.content)).mode.startswith("I;16")
    np.testing.assert_allclose(read_depth(as_png.content), np.rint(depth), atol=0)
    colour = admin.get(f"/v1/image-queries/{iq_id}/depth", params={"view": "colour"})
    assert colour.status_code == 200 and colour.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(colour.content)).convert("RGB"), dtype=np.int32)
    assert shown.shape == (SIZE[1], SIZE[0], 3)
    # Against the plane of the part the dent stands out blue (recessed), the plate green.
    dent, rest = shown[22:28, 33:42].mean(axis=(0, 1)), shown[45:55, 5:20].mean(axis=(0, 1))
    assert dent[2] > dent[0] + 60 and rest[1] > dent[1] + 60, (dent, rest)

    image = admin.get(f"/v1/image-queries/{iq_id}/image")
    assert image.status_code == 200 and image.content == png()
    # Beside the image in the same blob store: two queries, an image and a depth map each.
    names = [p.name for p in helpers.blob_files(settings)]
    assert len(names) == 4 and sum(name.endswith("-depth") for name in names) == 2


def test_a_query_without_depth_is_a_clear_404_and_bad_views_and_maps_are_400s(admin, other_account) -> None:
    detector = admin.create_detector()
    plain = admin.post(
        "/v1/image-queries",
        params={"detector_id": detector["id"]},
        content=png(),
        headers={"content-type": "image/png"},
    )
    assert plain.status_code == 201, plain.text
    missing = admin.get(f"/v1/image-queries/{plain.json()['id']}/depth")
    assert missing.status_code == 404 and missing.json()["code"] == "no_depth"
    assert "has no depth map" in missing.json()["detail"] and "`depth`" in missing.json()["detail"]

    paired = submit_pair(admin, detector["id"], png(), npy(plate())).json()["id"]
    view = admin.get(f"/v1/image-queries/{paired}/depth", params={"view": "sepia"})
    assert view.status_code == 400 and "png, original, colour" in view.json()["detail"]
    assert other_account.get(f"/v1/image-queries/{paired}/depth").status_code == 404  # another account's

    eight_bit = io.BytesIO()
    Image.new("L", SIZE, 100).save(eight_bit, format="PNG")
    nan = plate()
    nan[0, 0] = np.nan
    for depth, words in [
        (eight_bit.getvalue(), "8 bits per channel"),
        (npy(nan), "NaN"),
        (npy(np.zeros((SIZE[1], SIZE[0]), np.float32)), "all zeros"),
        (npy(plate(shape=(SIZE[0], SIZE[0]))), "aspect ratios differ"),
    ]:
        refused = submit_pair(admin, detector["id"], png(), depth)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_depth", refused.text
        assert words in refused.json()["detail"]
    extra = admin.post(
        "/v1/image-queries",
        params={"detector_id": detector["id"]},
        files={"image": ("a.png", png(), "image/png"), "rgb": ("b.png", png(), "image/png")},
    )
    assert extra.status_code == 400 and "Unexpected multipart part 'rgb'" in extra.json()["detail"]


def test_the_json_form_and_a_batch_item_carry_depth_and_the_dataset_says_which(admin) -> None:
    detector = admin.create_detector()
    body = {"rgb_base64": base64.b64encode(png()).decode(), "depth_base64": base64.b64encode(npy(plate())).decode()}
    by_json = admin.post("/v1/image-queries/rgbd", params={"detector_id": detector["id"]}, json=body)
    assert by_json.status_code == 201, by_json.text
    wrong_type = admin.post(
        "/v1/image-queries/rgbd",
        params={"detector_id": detector["id"]},
        content=png(),
        headers={"content-type": "image/png"},
    )
    assert wrong_type.status_code == 415 and "rgb_base64" in wrong_type.json()["detail"]

    metadata = base64.urlsafe_b64encode(json.dumps({"is_from_edge": True}).encode()).decode().rstrip("=")
    depth_png = encode_depth_png(plate(600.0))
    items = [
        {
            "detector_id": detector["id"],
            "image_query_id": new_id("iq"),
            "content_type": "image/png",
            "image": base64.b64encode(png(value=v)).decode(),
            "metadata": metadata,
            **extra,
        }
        for v, extra in [(10, {"depth": base64.b64encode(depth_png).decode()}), (20, {}), (30, {"depth": "%%"})]
    ]
    results = admin.post("/v1/image-queries/batch", json={"items": items}).json()["results"]
    assert [r["status"] for r in results] == [201, 201, 400] and "depth" in results[2]["detail"]
    with_depth, without = items[0]["image_query_id"], items[1]["image_query_id"]
    assert admin.get(f"/v1/image-queries/{with_depth}/depth").content == depth_png  # a PNG is served as sent
    assert admin.get(f"/v1/image-queries/{without}/depth").status_code == 404

    for iq_id, label in [(by_json.json()["id"], "YES"), (with_depth, "NO"), (without, "NO")]:
        labeled = admin.post("/v1/labels", json={"image_query_id": iq_id, "label": label})
        assert labeled.status_code in (200, 201), labeled.text
    dataset = {row["image_query_id"]: row for row in admin.get(f"/v1/detectors/{detector['id']}/dataset").json()}
    assert dataset[without]["depth_url"] is None
    url = dataset[with_depth]["depth_url"]
    assert url == f"/v1/image-queries/{with_depth}/depth?view=original"
    assert admin.get(url).content == depth_png
    assert dataset[by_json.json()["id"]]["depth_url"] is not None


def depth_model() -> bytes:
    """A real two-input ONNX classifier: P(YES) grows with the mean distance (mm) past 500."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["image_mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["depth"], ["depth_mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["image_mean", "zero"], ["ignored"]),
        helper.make_node("Sub", ["depth_mean", "centre"], ["offset"]),
        helper.make_node("Add", ["offset", "ignored"], ["score"]),
        helper.make_node("Reshape", ["score", "shape"], ["column"]),
        helper.make_node("MatMul", ["column", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "depth",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32]),
            helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 8, 8]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])],
        initializer=[
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("centre", TensorProto.FLOAT, [1], [500.0]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
            helper.make_tensor("weights", TensorProto.FLOAT, [1, 2], [-0.1, 0.1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def depth_detector(admin, helpers) -> str:  # type: ignore[no-untyped-def]
    detector = admin.create_detector(confidence_threshold=0.9)
    config = {**helpers.pipeline_config("primary", ["NO", "YES"]), "depth": {"height": 8, "width": 8}}
    manifest = {
        "primary_pipeline_config": config,
        "primary_metadata": {"trainer": "test"},
        "metrics": {"balanced_accuracy": 0.9},
        "training_set_size": 10,
        "class_counts": {"NO": 5, "YES": 5},
        "trainer": "test",
        "activate": True,
    }
    files = {"primary": ("model.buf", depth_model(), "application/octet-stream")}
    uploaded = admin.post(
        f"/v1/detectors/{detector['id']}/models", files=files, data={"manifest": json.dumps(manifest)}
    )
    assert uploaded.status_code == 201, uploaded.text
    return str(detector["id"])


def test_a_depth_model_answers_from_the_depth_and_refuses_an_image_without_one(admin, depth_detector) -> None:
    far = submit_pair(admin, depth_detector, png(), npy(plate(560.0))).json()
    near = submit_pair(admin, depth_detector, png(), npy(plate(440.0))).json()
    assert far["result"]["label"] == "YES" and far["result"]["source"] == "ALGORITHM", far
    assert near["result"]["label"] == "NO" and near["result"]["confidence"] > 0.99, near

    plain = admin.post(
        "/v1/image-queries",
        params={"detector_id": depth_detector},
        content=png(),
        headers={"content-type": "image/png"},
    )
    assert plain.status_code == 400 and plain.json()["code"] == "depth_required"
    assert "`depth` part" in plain.json()["detail"]
    # An edge's escalation without depth is not refused (it would be lost): a person answers it.
    metadata = base64.urlsafe_b64encode(json.dumps({"is_from_edge": True}).encode()).decode().rstrip("=")
    escalated = admin.post(
        "/v1/image-queries",
        params={"detector_id": depth_detector, "metadata": metadata},
        content=png(),
        headers={"content-type": "image/png"},
    )
    assert escalated.status_code == 201 and escalated.json()["done_processing"] is False
    queue = admin.get("/v1/review/queue", params={"detector_id": depth_detector}).json()
    assert [item["reason"] for item in queue["items"]] == ["no_depth"]
