"""The anomaly post-processor: severity grades, boxes from the map, confidence, overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from intellioptics_common.anomaly import (
    Severity,
    SeverityCuts,
    boxes_from_map,
    interpret,
    render_overlay,
    resize_map,
)
from intellioptics_common.model_package import AnomalySpec, PipelineConfig


@pytest.mark.parametrize(
    ("score", "grade"),
    [(0.0, "Normal"), (0.29, "Normal"), (0.3, "Potential"), (0.49, "Potential"), (0.5, "Moderate"), (0.8, "Critical")],
)
def test_default_severity_cut_points(score: float, grade: str) -> None:
    assert SeverityCuts().grade(score) == Severity(grade)


def test_cut_points_are_a_setting_and_must_be_ordered() -> None:
    assert SeverityCuts(0.2, 0.4, 0.6).grade(0.65) is Severity.CRITICAL
    with pytest.raises(ValueError, match="potential <= moderate"):
        SeverityCuts(0.6, 0.5, 0.8)


def test_two_regions_give_two_boxes_highest_first() -> None:
    amap = np.zeros((320, 320), dtype=np.float32)
    amap[40:80, 200:260] = 0.7  # rows 40-80, cols 200-260
    amap[250:300, 10:30] = 0.95
    amap[150, 150] = 0.4  # below the threshold: no box
    boxes = boxes_from_map(amap, 0.5)
    assert len(boxes) == 2
    first, second = boxes
    assert first.score == pytest.approx(0.95) and second.score == pytest.approx(0.7)
    # Cells are 5 px at 320 px, so the boxes are exact here.
    assert (first.left, first.top, first.right, first.bottom) == pytest.approx(
        (10 / 320, 250 / 320, 30 / 320, 300 / 320)
    )
    assert (second.left, second.top, second.right, second.bottom) == pytest.approx(
        (200 / 320, 40 / 320, 260 / 320, 80 / 320)
    )
    wire = first.to_wire()
    assert wire["label"] == "anomaly" and wire["geometry"]["x"] == pytest.approx(20 / 320)


def test_diagonal_neighbours_are_one_region_and_a_clean_map_has_none() -> None:
    amap = np.zeros((64, 64), dtype=np.float32)
    for i in range(10, 20):
        amap[i, i] = 0.9
    assert len(boxes_from_map(amap)) == 1
    assert boxes_from_map(np.full((64, 64), 0.49, dtype=np.float32)) == ()


def test_interpret_labels_grades_and_pulls_foreign_images_to_chance() -> None:
    amap = np.zeros((40, 40), dtype=np.float32)
    amap[5:9, 5:9] = 0.9
    sure = interpret(0.9, amap)
    assert (sure.label, sure.severity, sure.confidence) == ("YES", Severity.CRITICAL, pytest.approx(0.9))
    assert len(sure.boxes) == 1
    good = interpret(0.1, np.zeros((40, 40)))
    assert (good.label, good.confidence, good.boxes) == ("NO", pytest.approx(0.9), ())
    foreign = interpret(0.9, amap, in_domain=0.0)
    assert foreign.confidence == pytest.approx(0.5) and foreign.raw_confidence == pytest.approx(0.9)


def test_overlays_are_pngs_at_the_image_size() -> None:
    rgb = np.full((90, 120, 3), 128, dtype=np.uint8)
    amap = np.zeros((40, 40), dtype=np.float32)
    amap[10:20, 10:20] = 1.0
    result = interpret(1.0, amap)
    for kind in ("heatmap", "mask", "boxes"):
        image = Image.open(io.BytesIO(render_overlay(rgb, result.anomaly_map, result.boxes, kind)))
        assert image.size == (120, 90)
    boxed = np.asarray(Image.open(io.BytesIO(render_overlay(rgb, amap, result.boxes, "boxes"))))
    assert (boxed[..., 0] == 255).any() and not (boxed[60:, 80:, 0] == 255).any()
    with pytest.raises(ValueError, match="heatmap"):
        render_overlay(rgb, amap, (), "sparkles")
    assert resize_map(amap, 90, 120).shape == (90, 120)


def test_anomaly_section_round_trips_and_classifier_yaml_is_unchanged() -> None:
    spec = AnomalySpec(severity_cuts=SeverityCuts(0.2, 0.5, 0.9), raw_threshold=12.5, raw_scale=2.0)
    config = PipelineConfig(
        kind="primary", mode="BINARY", class_names=("NO", "YES"), model_kind="anomaly", anomaly=spec
    )
    back = PipelineConfig.from_yaml(config.to_yaml())
    assert back == config and back.anomaly is not None and back.anomaly.severity_cuts.critical == 0.9
    plain = PipelineConfig(kind="primary", mode="BINARY", class_names=("NO", "YES"))
    assert "model_kind" not in plain.to_yaml() and "anomaly" not in plain.to_yaml()
    assert PipelineConfig.from_yaml(plain.to_yaml()).model_kind == "classifier"
