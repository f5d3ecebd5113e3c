"""Issue 18: COUNT and BOUNDING_BOX detectors with the real ``groundlight`` SDK through the
edge gateway (nginx → edge API → cloud API), then a real detection model trained on
generated surfaces, registered in the cloud, pulled by the edge and answering there.

Real processes throughout: cloud API (SQLite), worker, inference service, edge API, nginx.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from groundlight_openapi_client.exceptions import ApiException

from intellioptics_common.imaging import ImageLimits, decode_image
from intellioptics_common.model_package import METADATA_FILE, MODEL_FILE, PIPELINE_FILE, list_versions
from intellioptics_training.detection import (
    DetectionOptions,
    DetectionScorer,
    export_detection_package,
    read_yolo,
    train_detection,
)
from intellioptics_training.evaluate import load_detector
from intellioptics_training.synthetic import encode_png, generate_detection, write_detection_dataset
from tests.e2e.loop import Loop, loop_stack
from tests.support.cloud_stack import CLOUD_BOOTSTRAP_TOKEN

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The SDK's add_label(rois=...) calls pydantic's deprecated .dict(); that is its code, not ours.
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]

CLASS = "defect"  # the generator's class name; a package's classes must be the detector's
SURFACE = "leather"
STRENGTH = 5.0  # plain defects: the test is about the modes end to end, docs/benchmarks.md measures quality
THRESHOLD = 0.75
MAX_OBJECTS = {"COUNT": 3, "BOUNDING_BOX": 2}


def _value(field: object) -> object:
    return getattr(field, "value", field)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with loop_stack(tmp_path_factory.mktemp("detection-loop"), refresh_rate=1.0) as running_loop:
        yield running_loop


@pytest.fixture(scope="module")
def detectors(loop: Loop) -> dict[str, str]:
    """A COUNT and a BOUNDING_BOX detector created with the SDK, both configured on the edge."""
    count = loop.gl.create_counting_detector(
        "trays",
        "How many defects are on the part?",
        class_name=CLASS,
        max_count=MAX_OBJECTS["COUNT"],
        confidence_threshold=THRESHOLD,
    )
    boxes = loop.gl.create_bounding_box_detector(
        "where",
        "Where are the defects?",
        class_name=CLASS,
        max_num_bboxes=MAX_OBJECTS["BOUNDING_BOX"],
        confidence_threshold=THRESHOLD,
    )
    assert _value(count.mode) == "COUNT" and count.mode_configuration == {"class_name": CLASS, "max_count": 3}
    assert _value(boxes.mode) == "BOUNDING_BOX"
    assert boxes.mode_configuration == {"class_name": CLASS, "max_num_bboxes": 2}
    ids = {"COUNT": count.id, "BOUNDING_BOX": boxes.id}
    for detector_id in ids.values():
        settings = loop.admin.request(
            "POST", f"/v1/detectors/{detector_id}/settings", json={"retrain_every_n_labels": None}
        )
        assert settings.status_code == 200, settings.text
    config = {
        "global_config": {"refresh_rate": loop.refresh_rate, "confident_audit_rate": 0.0},
        "detectors": [{"detector_id": d, "edge_inference_config": "default"} for d in ids.values()],
    }
    response = httpx.put(
        f"{loop.edge.gateway_url}/edge-config", json=config, headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}
    )
    assert response.status_code == 200, response.text
    return ids


def _image(seed: int) -> bytes:
    (example,) = generate_detection(1, seed=seed, strength=STRENGTH, surface=SURFACE)
    return encode_png(example.rgb)


def _refused(call: Any) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 400, caught.value.body
    return json.loads(caught.value.body)["detail"]


def test_sdk_round_trips_for_count_and_bounding_box(loop: Loop, detectors: dict[str, str]) -> None:
    gl = loop.gl
    # Count: no model yet, so the query waits for a person, in the counting shape.
    iq = gl.submit_image_query(detectors["COUNT"], _image(1), wait=0)
    assert _value(iq.result_type) == "counting" and iq.done_processing is False
    assert iq.result.count is None
    two = [gl.create_roi(CLASS, (0.1, 0.1), (0.3, 0.3)), gl.create_roi(CLASS, (0.5, 0.5), (0.8, 0.7))]
    gl.add_label(iq, 2, rois=two)
    got = gl.get_image_query(iq.id)
    assert got.result.count == 2 and got.result.greater_than_max is False and _value(got.result.source) == "USER"
    assert got.done_processing is True and len(got.rois) == 2
    geometry = got.rois[1].geometry
    assert (geometry.left, geometry.top, geometry.right, geometry.bottom) == (0.5, 0.5, 0.8, 0.7)
    assert abs(geometry.x - 0.65) < 1e-9 and got.rois[0].label == CLASS

    # A count label needs no boxes, and may be zero.
    zero = gl.submit_image_query(detectors["COUNT"], _image(2), wait=0)
    gl.add_label(zero, 0)
    assert gl.get_image_query(zero.id).result.count == 0

    # Bounding boxes: BOUNDING_BOX with its rois, NO_OBJECTS without.
    boxed = gl.submit_image_query(detectors["BOUNDING_BOX"], _image(3), wait=0)
    assert _value(boxed.result_type) == "bounding_box" and boxed.done_processing is False
    gl.add_label(boxed, "BOUNDING_BOX", rois=two[:1])
    got = gl.get_image_query(boxed.id)
    assert got.result.label == "BOUNDING_BOX" and len(got.rois) == 1 and got.rois[0].geometry.right == 0.3
    empty = gl.submit_image_query(detectors["BOUNDING_BOX"], _image(4), wait=0)
    gl.add_label(empty, "NO_OBJECTS")
    got = gl.get_image_query(empty.id)
    assert got.result.label == "NO_OBJECTS" and not got.rois

    # Bad labels: a clear 400 and nothing stored (the earlier label still stands).
    flat = gl.create_roi(CLASS, (0.2, 0.2), (0.2, 0.5))
    three = [*two, gl.create_roi(CLASS, (0.0, 0.8), (0.1, 0.9))]
    assert "max_count of 3" in _refused(lambda: gl.add_label(iq, 4))
    assert "2 boxes were sent" in _refused(lambda: gl.add_label(iq, 1, rois=two))
    assert "right > left" in _refused(lambda: gl.add_label(iq, 1, rois=[flat]))
    assert "max_num_bboxes is 2" in _refused(lambda: gl.add_label(boxed, "BOUNDING_BOX", rois=three))
    assert "NO_OBJECTS label takes no rois" in _refused(lambda: gl.add_label(boxed, "NO_OBJECTS", rois=two))
    assert "needs its boxes" in _refused(lambda: gl.add_label(boxed, "BOUNDING_BOX"))
    assert "not a count" in _refused(lambda: gl.add_label(iq, "many"))
    outside = {
        "label": "BOUNDING_BOX",
        "image_query_id": boxed.id,
        "rois": [{"label": CLASS, "geometry": {"left": -0.1, "top": 0.1, "right": 0.4, "bottom": 0.4}}],
    }
    response = httpx.post(
        f"{loop.edge.gateway_url}/device-api/v1/labels", json=outside, headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}
    )
    # Out of range is refused by the body's schema, as every field of the API is: 422 naming it.
    assert response.status_code == 422 and "rois.0.geometry.left" in response.json()["detail"], response.text
    assert gl.get_image_query(iq.id).result.count == 2
    kept = gl.get_image_query(boxed.id)
    assert kept.result.label == "BOUNDING_BOX" and len(kept.rois) == 1

    # Bad mode configurations: 400 naming the field.
    for config in ({"class_name": CLASS, "max_count": 60}, {"max_count": 2}):
        body = {"name": f"bad-{len(config)}", "query": "How many?", "mode": "COUNT", "mode_configuration": config}
        response = httpx.post(
            f"{loop.edge.gateway_url}/device-api/v1/detectors",
            json=body,
            headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN},
        )
        assert response.status_code == 400 and "mode_configuration." in response.json()["detail"], response.text


# --- a trained model on the edge -------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real detection model (24 generated images, short training), written as a COUNT
    and a BOUNDING_BOX package: the same weights read under each mode."""
    root = tmp_path_factory.mktemp("detection-train")
    write_detection_dataset(root / "data", 24, seed=7, strength=STRENGTH, surface=SURFACE)
    options = DetectionOptions(epochs=12, views=("identity", "hflip"), max_count=3, threshold=THRESHOLD)
    trained = train_detection(read_yolo(root / "data"), "count", options)
    out = {}
    for mode, most in MAX_OBJECTS.items():
        models = root / mode
        spec = dataclasses.replace(trained.spec, max_count=most)  # the detector's max_count / max_num_bboxes
        export_detection_package(models, "det_test", dataclasses.replace(trained, mode=mode, spec=spec))
        out[mode] = models
    return out


def _upload(loop: Loop, detector_id: str, models: Path) -> dict[str, Any]:
    """Register a package version in the cloud as the worker does (one multipart upload)."""
    files: dict[str, tuple[str, bytes, str]] = {}
    manifest: dict[str, Any] = {"training_set_size": 24, "trainer": "test-detection", "activate": True}
    for kind in ("primary", "oodd"):
        version = models / "det_test" / kind / str(list_versions(models, "det_test", kind)[-1])
        files[kind] = (MODEL_FILE, (version / MODEL_FILE).read_bytes(), "application/octet-stream")
        manifest[f"{kind}_pipeline_config"] = yaml.safe_load((version / PIPELINE_FILE).read_text())
        manifest[f"{kind}_metadata"] = json.loads((version / METADATA_FILE).read_text())
    response = loop.admin.request(
        "POST", f"/v1/detectors/{detector_id}/models", files=files, data={"manifest": json.dumps(manifest)}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_the_edge_answers_counts_and_boxes(loop: Loop, detectors: dict[str, str], packages: dict[str, Path]) -> None:
    gl = loop.gl
    examples = list(generate_detection(12, seed=2024, strength=STRENGTH, surface=SURFACE))
    limits = ImageLimits()
    for mode, detector_id in detectors.items():
        version = _upload(loop, detector_id, packages[mode])
        loop.wait_edge_serving(detector_id, version["id"], timeout=60)
        scorer = DetectionScorer(load_detector(packages[mode], "det_test"))
        exact, escalated, confident_right = 0, [], []
        for example in examples:
            image = encode_png(example.rgb)
            iq = gl.submit_image_query(detector_id, image, wait=0)
            assert iq.result.from_edge is True and _value(iq.result.source) == "ALGORITHM"
            # Parity: the edge answers what the training library's scorer computes.
            expected = scorer.result(decode_image(image, limits).rgb)
            assert abs(iq.result.confidence - expected.confidence) < 1e-4
            rois = iq.rois or []
            assert len(rois) == len(expected.boxes) <= MAX_OBJECTS[mode]
            for roi, box in zip(rois, expected.boxes, strict=True):
                assert roi.label == CLASS and 0.0 <= roi.geometry.left < roi.geometry.right <= 1.0
                assert abs(roi.geometry.left - box.left) < 1e-4 and abs(roi.score - box.score) < 1e-3
            if mode == "COUNT":
                assert _value(iq.result_type) == "counting" and iq.result.count == expected.count
                right = iq.result.count == len(example.boxes)
            else:
                assert _value(iq.result_type) == "bounding_box"
                assert iq.result.label == expected.label
                want = "GREATER_THAN_MAX" if expected.greater_than_max else "BOUNDING_BOX" if rois else "NO_OBJECTS"
                assert iq.result.label == want
                right = min(len(example.boxes), MAX_OBJECTS[mode]) == len(rois)
            # Unconfident answers escalate; the confident ones are done.
            assert iq.done_processing is (iq.result.confidence >= THRESHOLD), iq.result.confidence
            exact += right
            if iq.done_processing:
                confident_right.append(right)
            else:
                escalated.append((iq.id, expected))
        print(
            f"\n{mode}: {exact}/{len(examples)} counts exact at the edge; {sum(confident_right)} of "
            f"{len(confident_right)} confident answers right; {len(escalated)} escalated"
        )
        assert exact >= len(examples) // 2, exact
        # Confidence is a promise, on images the model never saw (12 is a small sample: floor).
        assert sum(confident_right) >= int(THRESHOLD * len(confident_right)), confident_right

        # An escalated query reaches the cloud, which runs the same active model: its boxes
        # are the reviewer's pre-labels.
        if escalated:
            iq_id, expected = escalated[0]

            def arrived(query_id: str = iq_id) -> dict[str, Any] | None:
                response = loop.admin.request("GET", f"/v1/image-queries/{query_id}")
                return response.json() if response.status_code == 200 else None

            stored = loop.admin.wait(arrived, 30, f"escalation {iq_id} in the cloud")
            assert len(stored["rois"] or []) == len(expected.boxes)
            assert stored["result"]["result_type"] == ("counting" if mode == "COUNT" else "bounding_box")
            pending = loop.admin.request("GET", "/v1/review/queue").json()["items"]
            assert iq_id in {item["image_query_id"] for item in pending}


def test_the_worker_trains_a_count_detector_from_sdk_labels(loop: Loop, detectors: dict[str, str]) -> None:
    """The whole loop for counts: the SDK labels counts with their boxes, the worker trains
    on them, the edge pulls the version and answers unseen images with counts."""
    gl = loop.gl
    trays = gl.create_counting_detector(
        "trays-trained", "How many defects?", class_name=CLASS, max_count=3, confidence_threshold=THRESHOLD
    )
    response = loop.admin.request("POST", f"/v1/detectors/{trays.id}/settings", json={"retrain_every_n_labels": None})
    assert response.status_code == 200, response.text
    config = {
        "global_config": {"refresh_rate": loop.refresh_rate, "confident_audit_rate": 0.0},
        "detectors": [{"detector_id": d, "edge_inference_config": "default"} for d in (*detectors.values(), trays.id)],
    }
    response = httpx.put(
        f"{loop.edge.gateway_url}/edge-config", json=config, headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}
    )
    assert response.status_code == 200, response.text
    for example in generate_detection(24, seed=7, strength=STRENGTH, surface=SURFACE):
        iq = gl.submit_image_query(trays.id, encode_png(example.rgb), wait=0)
        rois = [
            gl.create_roi(CLASS, (cx - w / 2, cy - h / 2), (cx + w / 2, cy + h / 2))
            for _, cx, cy, w, h in example.boxes
        ]
        gl.add_label(iq, len(rois), rois=rois or None)

    version = loop.train(trays.id, trainer="auto")
    metrics = version["metrics"]
    assert version["status"] == "active" and version["training_set_size"] == 24, version["decision"]
    assert metrics["evaluation"]["method"] == "cross-fit" and metrics["headline"] == "count exact-match"
    loop.wait_edge_serving(trays.id, version["id"], timeout=60)

    unseen = list(generate_detection(12, seed=2025, strength=STRENGTH, surface=SURFACE))
    exact, confident_right = 0, []
    for example in unseen:
        iq = gl.submit_image_query(trays.id, encode_png(example.rgb), wait=0)
        assert iq.result.from_edge is True and _value(iq.result_type) == "counting"
        right = iq.result.count == min(len(example.boxes), 3)
        exact += right
        if iq.result.confidence >= THRESHOLD:
            assert iq.done_processing is True
            confident_right.append(right)
    print(
        f"\nworker-trained COUNT: out of fold exact {metrics['count_exact_match']}; edge on unseen "
        f"{exact}/12 exact, {sum(confident_right)}/{len(confident_right)} confident right"
    )
    assert exact >= 8, exact
    assert sum(confident_right) >= int(THRESHOLD * len(confident_right)), confident_right
