"""COUNT and BOUNDING_BOX: which labels train, the cloud client's view of them, and the
promotion decision on detection figures (no training here: test_worker_detection.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from intellioptics_common.anomaly import Box
from intellioptics_common.detection import DetectionSpec, from_candidates
from intellioptics_worker.boxes import BoxMetrics, check_boxes_trainable, measure_boxes, select_boxed
from intellioptics_worker.cloud import DatasetExample
from intellioptics_worker.dataset import LabeledImage
from intellioptics_worker.errors import DatasetError
from intellioptics_worker.promotion import decide

ONE = ((0.1, 0.1, 0.3, 0.3),)
TWO = ((0.1, 0.1, 0.3, 0.3), (0.5, 0.5, 0.8, 0.7))


def _example(iq: str, label: str, rois=None) -> DatasetExample:
    return DatasetExample(iq, label, "USER", f"/v1/image-queries/{iq}/image", rois)


def test_count_labels_train_only_when_they_say_where_every_object_is():
    rows = [
        _example("iq_1", "1", ONE),
        _example("iq_2", "2", TWO),
        _example("iq_3", "0"),
        _example("iq_4", "2"),  # how many, not where
        _example("iq_5", "GREATER_THAN_MAX"),
        _example("iq_6", "UNCLEAR"),
        _example("iq_1", "2", TWO),  # a later label wins
        _example("iq_7", "lots"),
    ]
    selection = select_boxed(rows, "COUNT")
    assert [(e.image_query_id, e.label, e.rois) for e in selection.examples] == [
        ("iq_1", "2", TWO),
        ("iq_2", "2", TWO),
        ("iq_3", "0", ()),
    ]
    assert selection.skipped == {
        "count_without_boxes": 1,
        "greater_than_max": 1,
        "unclear": 1,
        "unknown_label": 1,
    }


def test_bounding_box_labels_need_their_boxes():
    rows = [
        _example("iq_1", "BOUNDING_BOX", ONE),
        _example("iq_2", "no_objects"),
        _example("iq_3", "BOUNDING_BOX"),  # the cloud refuses this; an old row must not train as "empty"
        _example("iq_4", "GREATER_THAN_MAX", TWO),
    ]
    selection = select_boxed(rows, "BOUNDING_BOX")
    assert [(e.image_query_id, e.label) for e in selection.examples] == [
        ("iq_1", "BOUNDING_BOX"),
        ("iq_2", "NO_OBJECTS"),
    ]
    assert selection.skipped == {"unknown_label": 1, "greater_than_max": 1}


def test_too_few_boxed_labels_say_what_to_label():
    selection = select_boxed([_example(f"iq_{i}", "2") for i in range(9)] + [_example("iq_x", "1", ONE)], "COUNT")
    with pytest.raises(DatasetError, match=r"at least 8 labeled images.*have 1 images, 1 objects; 9 count label"):
        check_boxes_trainable(selection, "COUNT", 8, 4)
    many = select_boxed([_example(f"iq_{i}", "1", ONE) for i in range(8)], "COUNT")
    check_boxes_trainable(many, "COUNT", 8, 4)  # enough: no error


def test_the_cloud_client_reads_a_count_detector_and_its_boxes(cloud):
    cloud.detector.update(mode="COUNT", mode_configuration={"class_name": "part", "max_count": 4})
    cloud.dataset.append(
        {"image_query_id": "iq_1", "label": "1", "source": "USER", "created_at": "2026-01-01T00:00:00Z",
         "image_url": "/v1/image-queries/iq_1/image",
         "rois": [{"label": "part", "score": 1.0, "geometry": {"left": 0.1, "top": 0.2, "right": 0.3, "bottom": 0.4,
                                                               "x": 0.2, "y": 0.3}}]}
    )  # fmt: skip
    client = cloud.client()
    detector = client.get_detector(cloud.detector_id)
    assert detector.class_names == ("part",) and detector.max_objects == 4
    (example,) = client.get_dataset(cloud.detector_id)
    assert example.rois == ((0.1, 0.2, 0.3, 0.4),)


def _version(mode: str, counts: list[int], confidence: float, truth: list[int]) -> BoxMetrics:
    """A version that finds ``counts[i]`` boxes on image i (each placed on a true box)."""
    spec = DetectionSpec(box_threshold=0.5, max_count=5)
    images, results = [], []
    for i, (found, true) in enumerate(zip(counts, truth, strict=True)):
        boxes = tuple((0.1 * k, 0.1 * k, 0.1 * k + 0.08, 0.1 * k + 0.08) for k in range(true))
        images.append(LabeledImage(f"iq_{i}", str(true), b"", boxes))
        candidates = tuple(Box(*boxes[k], 0.9, "part") if k < true else Box(0.9, 0.9, 0.95, 0.95, 0.9, "part")
                           for k in range(found))  # fmt: skip
        result = from_candidates(candidates, spec=spec, mode=mode)
        results.append(replace(result, confidence=confidence))
    return measure_boxes(images, results, mode=mode, class_name="part", spec=spec, threshold=0.75)


def test_detection_versions_are_promoted_on_their_headline():
    truth = [0, 1, 2, 1, 0, 2, 1, 1, 2, 0]
    perfect = _version("COUNT", truth, 0.9, truth)
    assert perfect.headline == 1.0 and perfect.figures["count_mae"] == 0.0 and perfect.n == 10
    off_by_two = _version("COUNT", [0, 1, 2, 1, 0, 2, 1, 1, 0, 1], 0.9, truth)
    assert off_by_two.headline == pytest.approx(0.8)
    worse = decide("auto", off_by_two, perfect, own=off_by_two, active_version=1)
    assert not worse.activate and "count exact-match 0.800 vs 1.000 (v1)" in worse.reason
    off_by_one = _version("COUNT", [0, 1, 2, 1, 0, 2, 1, 1, 2, 1], 0.9, truth)
    assert decide("auto", off_by_one, perfect, own=off_by_one).activate  # one image is a tie
    # Confident answers below the threshold never serve, whatever the comparison says.
    assert off_by_two.confident_accuracy == pytest.approx(0.8)
    overconfident = _version("COUNT", [1, 2, 0, 1, 0, 2, 1, 1, 2, 0], 0.9, truth)
    short = decide("auto", perfect, None, own=overconfident)
    assert not short.activate and "fall short of the threshold" in short.reason
    boxes = _version("BOUNDING_BOX", truth, 0.5, truth)
    assert boxes.headline_name == "F1 at IoU 0.3" and boxes.headline == 1.0 and boxes.confident_accuracy is None
