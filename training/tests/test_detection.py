"""Counting and bounding-box detectors: the YOLO reader, the common decoder, the trained
head against its ONNX export, and the CLI from a generated YOLO set to rois and counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from intellioptics_common.anomaly import Box
from intellioptics_common.detection import DetectionSpec, decode, interpret, iou
from intellioptics_common.errors import PackageError
from intellioptics_common.model_package import PipelineConfig
from intellioptics_common.preprocessing import to_input_tensor
from intellioptics_training.backbone import DEFAULT_INPUT
from intellioptics_training.detection import (
    DetectionOptions,
    average_precision,
    count_temperature,
    make_targets,
    read_yolo,
    train_detection,
    truth_boxes,
    view_boxes,
)
from intellioptics_training.errors import DatasetError
from intellioptics_training.features import BackboneRunner, make_session
from intellioptics_training.synthetic import generate_detection, write_detection_dataset

CLI = [sys.executable, "-m", "intellioptics_training.cli"]


def _yolo(root: Path, labels: dict[str, str], names: str | None = "names: [scratch]\n") -> Path:
    from intellioptics_training.synthetic import encode_png

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, text in labels.items():
        (root / "images" / f"{stem}.png").write_bytes(encode_png(np.full((40, 60, 3), 128, dtype=np.uint8)))
        if text is not None:
            (root / "labels" / f"{stem}.txt").write_text(text)
    if names:
        (root / "data.yaml").write_text(names)
    return root


def test_yolo_reader_takes_boxes_polygons_and_empty_files(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "d", {"a": "0 0.5 0.5 0.2 0.4\n", "b": "", "c": "0 0.1 0.1 0.3 0.1 0.3 0.5\n"})
    (root / "images" / "broken.png").write_bytes(b"not an image")
    data = read_yolo(root)
    assert data.class_names == ("scratch",) and data.skipped == 1 and len(data.rgb) == 3
    assert data.rgb[0].shape == (320, 320, 3)  # stretched to the model's input; boxes are fractions
    np.testing.assert_allclose(data.boxes[0], [[0, 0.5, 0.5, 0.2, 0.4]])
    assert data.boxes[1].shape == (0, 5)
    np.testing.assert_allclose(data.boxes[2], [[0, 0.2, 0.3, 0.2, 0.4]])  # the polygon's bounding box
    assert data.object_count == 2


def test_yolo_reader_finds_labels_in_split_and_flat_layouts(tmp_path: Path) -> None:
    from intellioptics_training.synthetic import encode_png

    png = encode_png(np.full((32, 32, 3), 90, dtype=np.uint8))
    layouts = {
        "ultralytics": ("images/train/a.png", "labels/train/a.txt"),
        "roboflow": ("train/images/a.png", "train/labels/a.txt"),
        "flat": ("obj_train_data/a.png", "obj_train_data/a.txt"),
    }
    for name, (image, label) in layouts.items():
        root = tmp_path / "images" / name  # an "images" folder above DATA is not the layout's
        (root / image).parent.mkdir(parents=True)
        (root / label).parent.mkdir(parents=True, exist_ok=True)
        (root / image).write_bytes(png)
        (root / label).write_text("0 0.5 0.5 0.25 0.25\n")
        data = read_yolo(root)
        assert data.object_count == 1 and data.missing_labels == 0, name


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "5 values"),
        ("0 0.5 zero 0.2 0.2", "expected numbers"),
        ("1 0.5 0.5 0.2 0.2", "class 1 but only 1 class name"),
        ("-1 0.5 0.5 0.2 0.2", "whole number"),
        ("0 0.9 0.5 0.4 0.2", "outside the image"),
        ("0 0.5 0.5 0.0 0.2", "zero width or height"),
        ("0 nan 0.5 0.1 0.2", "outside the image"),
    ],
)
def test_yolo_reader_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    root = _yolo(tmp_path / "d", {"good": "0 0.5 0.5 0.1 0.1\n", "bad": f"0 0.5 0.5 0.1 0.1\n{line}\n"})
    with pytest.raises(DatasetError, match=message) as caught:
        read_yolo(root)
    assert "bad.txt line 2" in str(caught.value)


def test_yolo_reader_needs_label_files_and_class_names_when_given(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has a label file"):
        read_yolo(_yolo(tmp_path / "none", {"a": None, "b": None}))
    root = _yolo(tmp_path / "nameless", {"a": "2 0.5 0.5 0.1 0.1\n"}, names=None)
    assert read_yolo(root).class_names == ("class_0", "class_1", "class_2")
    assert read_yolo(root, class_names=("a", "b", "c")).class_names == ("a", "b", "c")
    (root / "data.yaml").write_text("names: 12\n")
    with pytest.raises(DatasetError, match="must name the classes"):
        read_yolo(root)


def test_view_boxes_follow_the_flipped_image() -> None:
    boxes = np.array([[0, 0.2, 0.3, 0.1, 0.2]])
    np.testing.assert_allclose(view_boxes(boxes, "hflip"), [[0, 0.8, 0.3, 0.1, 0.2]])
    np.testing.assert_allclose(view_boxes(boxes, "vflip"), [[0, 0.2, 0.7, 0.1, 0.2]])
    np.testing.assert_allclose(view_boxes(boxes, "rot180"), [[0, 0.8, 0.7, 0.1, 0.2]])


def _maps(peaks: list[tuple[int, int, float]], grid: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    heat = np.zeros((1, grid, grid), dtype=np.float32)
    size = np.full((2, grid, grid), np.log(0.1), dtype=np.float32)
    offset = np.full((2, grid, grid), 0.5, dtype=np.float32)
    for y, x, score in peaks:
        heat[0, y, x] = score
    return heat, size, offset


def test_decoder_finds_peaks_sizes_and_suppresses_neighbours() -> None:
    heat, size, offset = _maps([(2, 3, 0.9), (2, 4, 0.5), (7, 7, 0.6)])
    boxes = decode(heat, size, offset, ("part",))
    assert [round(b.score, 2) for b in boxes] == [0.9, 0.6]  # (2, 4) is not a local maximum
    first = boxes[0]
    assert first.label == "part"
    assert (first.left + first.right) / 2 == pytest.approx(0.35) and (first.top + first.bottom) / 2 == pytest.approx(
        0.25
    )
    assert first.right - first.left == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(PackageError, match="classes x H x W"):
        decode(heat, size, offset, ("a", "b"))


def test_count_caps_at_max_and_labels_follow_the_mode() -> None:
    peaks = [(1, 1, 0.9), (1, 5, 0.9), (5, 1, 0.9), (5, 5, 0.8), (8, 8, 0.1)]
    spec = DetectionSpec(box_threshold=0.5, max_count=3)
    counted = interpret(*_maps(peaks), class_names=("part",), spec=spec, mode="COUNT")
    assert counted.count == 3 and counted.greater_than_max and counted.label == "3" and len(counted.boxes) == 3
    boxed = interpret(*_maps(peaks), class_names=("part",), spec=spec, mode="BOUNDING_BOX")
    assert boxed.label == "GREATER_THAN_MAX"
    empty = interpret(*_maps([(3, 3, 0.1)]), class_names=("part",), spec=spec, mode="BOUNDING_BOX")
    assert empty.label == "NO_OBJECTS" and empty.count == 0 and not empty.boxes
    # An unsure candidate near the threshold makes the count unsure; clear ones make it sure.
    sure = interpret(*_maps([(3, 3, 0.97)]), class_names=("part",), spec=spec, mode="COUNT")
    unsure = interpret(*_maps([(3, 3, 0.97), (7, 7, 0.55)]), class_names=("part",), spec=spec, mode="COUNT")
    assert sure.confidence > 0.9 > unsure.confidence
    far = interpret(*_maps([(3, 3, 0.97)]), class_names=("part",), spec=spec, mode="COUNT", in_domain=0.0)
    assert far.confidence == pytest.approx(0.5)


def test_average_precision_and_iou() -> None:
    truth = [Box(0.1, 0.1, 0.3, 0.3, 1.0, "a"), Box(0.6, 0.6, 0.8, 0.8, 1.0, "a")]
    hit = Box(0.11, 0.1, 0.31, 0.3, 0.9, "a")
    miss = Box(0.4, 0.0, 0.5, 0.1, 0.8, "a")
    assert iou(hit, truth[0]) > 0.8 and iou(miss, truth[0]) == 0.0
    assert average_precision([(hit, miss)], [truth], ("a",), 0.5)["a"] == pytest.approx(0.5)
    perfect = (hit, Box(0.6, 0.6, 0.8, 0.8, 0.7, "a"))
    assert average_precision([perfect], [truth], ("a",), 0.5)["a"] == pytest.approx(1.0)


def test_count_temperature_keeps_the_promise() -> None:
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.9, 1.0, 200)
    correct = rng.random(200) < 0.8  # claims 0.95 on average, right 80 % of the time
    temperature = count_temperature(confidences, correct, 0.9)
    assert temperature > 1.0
    honest = count_temperature(np.full(200, 0.99), np.ones(200, dtype=bool), 0.9)
    assert honest == pytest.approx(1.0)


def test_targets_mark_each_centre_once() -> None:
    target = make_targets([np.array([[0, 0.25, 0.55, 0.2, 0.1]])], 10, 10, 1)
    assert float(target["heat"].max()) == 1.0 and int(target["centre"].sum()) == 1
    assert float(target["heat"][0, 0, 5, 2]) == 1.0
    np.testing.assert_allclose(target["offset"][0, :, 5, 2].numpy(), [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(target["size"][0, :, 5, 2].numpy(), np.log([0.2, 0.1]), atol=1e-6)


@pytest.fixture(scope="module")
def small_detector(runner: BackboneRunner, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("yolo")
    write_detection_dataset(root, 24, seed=3, strength=4.0, surface="metal")
    return train_detection(read_yolo(root), "count", DetectionOptions(epochs=12, folds=2), runner=runner)


def test_onnx_graph_matches_the_in_memory_head(small_detector, runner: BackboneRunner) -> None:
    images = [g.rgb for g in generate_detection(3, seed=4, strength=4.0, surface="metal")]
    s8, s16 = runner.maps(images, DEFAULT_INPUT, outputs=("feat_s8", "feat_s16"))
    with torch.no_grad():
        heat, size, offset = small_detector.head(torch.from_numpy(s8), torch.from_numpy(s16))
    session = make_session(small_detector.primary_onnx, 2)
    batch = np.concatenate([to_input_tensor(rgb, DEFAULT_INPUT) for rgb in images])
    o_heat, o_size, o_offset = session.run(["heatmap", "box_size", "box_offset"], {"image": batch})
    assert o_heat.shape == (3, 1, 40, 40) and o_size.shape == (3, 2, 40, 40)
    np.testing.assert_allclose(o_heat, heat.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_size, size.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_offset, offset.numpy(), atol=1e-4)
    assert small_detector.mode == "COUNT" and small_detector.out_of_fold["folds"] == 2
    assert 0.05 <= small_detector.spec.box_threshold <= 0.95


def test_training_refuses_sets_without_boxes(runner: BackboneRunner, tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_detection_dataset(root, 8, seed=3, surface="metal")
    for label in (root / "labels").iterdir():
        label.write_text("")
    with pytest.raises(DatasetError, match="no image has an object box"):
        train_detection(read_yolo(root), "count", DetectionOptions(epochs=1), runner=runner)
    with pytest.raises(DatasetError, match="mode must be"):
        train_detection(read_yolo(root), "boxes", DetectionOptions(epochs=1), runner=runner)


def test_pipeline_config_round_trips_the_detection_section() -> None:
    spec = DetectionSpec(box_threshold=0.4, max_count=5, candidate_a=1.5, count_temperature=2.0)
    config = PipelineConfig(kind="primary", mode="COUNT", class_names=("part",), model_kind="detection", detection=spec)
    again = PipelineConfig.from_yaml(config.to_yaml())
    assert again.detection == spec and again.model_kind == "detection"
    data = config.to_dict()
    del data["detection"]
    with pytest.raises(PackageError, match="needs its detection section"):
        PipelineConfig.from_dict(data)
    data["detection"] = {"box_threshold": 1.5}
    with pytest.raises(PackageError, match="box_threshold"):
        PipelineConfig.from_dict(data)


def _run(args: list[str], backbone_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTELLIOPTICS_BACKBONE_DIR": str(backbone_path), "INTELLIOPTICS_THREADS": "2"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=400, env=env, check=False)


@pytest.mark.slow
def test_cli_trains_boxes_from_the_yolo_layout_and_evaluates(tmp_path: Path, backbone_path: Path) -> None:
    train, test, models = tmp_path / "train", tmp_path / "test", tmp_path / "models"
    for out, seed, n in ((train, 41, 48), (test, 42, 30)):
        result = _run(
            [
                "dataset",
                "generate",
                str(out),
                "--kind",
                "detection",
                "--n-per-class",
                str(n),
                "--seed",
                str(seed),
                "--strength",
                "4",
                "--surface",
                "metal",
            ],
            backbone_path,
        )
        assert result.returncode == 0, result.stderr
    assert len(list((train / "labels").iterdir())) == 48

    args = ["train", str(train), "--mode", "bounding_box", "--out", str(models), "--epochs", "40", "--max-count", "5"]
    result = _run([*args, "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "BOUNDING_BOX" and summary["class_names"] == ["defect"] and summary["images"] == 48
    assert summary["out_of_fold"]["images"] == 48

    result = _run(["evaluate", str(models), str(test), "--json"], backbone_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 30 and report["objects"] == sum(
        len(t) for t in (truth_boxes(b, ("defect",)) for b in read_yolo(test).boxes)
    )
    # Plain defects (strength 4) on one surface: the head must find most of them.
    assert report["map50"] >= 0.5, report
    assert report["recall_iou30"] >= 0.6 and report["precision_iou30"] >= 0.6, report
    assert report["count_exact_match"] >= 0.5 and report["count_mae"] <= 0.8, report

    image = sorted((test / "images").iterdir())[0]
    overlays = tmp_path / "overlays"
    result = _run(["predict", str(models), str(image), "--json", "--overlays", str(overlays)], backbone_path)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["label"] in ("NO_OBJECTS", "BOUNDING_BOX", "GREATER_THAN_MAX") and 0.0 <= line["confidence"] <= 1.0
    assert line["count"] == len(line["rois"]) <= 5
    for roi in line["rois"]:
        g = roi["geometry"]
        assert (
            roi["label"] == "defect" and 0.0 <= g["left"] < g["right"] <= 1.0 and 0.0 <= g["top"] < g["bottom"] <= 1.0
        )
    assert (overlays / f"{image.stem}_boxes.png").is_file()

    bad = _yolo(tmp_path / "bad", {"x": "0 1.5 0.5 0.1 0.1\n"})
    result = _run(["train", str(bad), "--mode", "count", "--out", str(tmp_path / "m2")], backbone_path)
    assert result.returncode != 0 and "outside the image" in result.stderr and "Traceback" not in result.stderr
