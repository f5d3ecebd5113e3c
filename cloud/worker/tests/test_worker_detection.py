"""The worker trains COUNT and BOUNDING_BOX detectors from the labels the SDK sends (a count
with one roi per object, BOUNDING_BOX with its rois, NO_OBJECTS), through a REAL cloud API
process and the REAL training library: the version is trained on every usable label,
measured out of fold, registered, compared with the active version on images that
version never saw, and its binaries keep the calibration's promise on unseen images.

Images: generated leather surfaces with 0-3 plain defects (``generate_detection``,
strength 5): the test is about the loop; docs/benchmarks.md measures quality."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from intellioptics_common.model_package import PipelineConfig
from intellioptics_worker.scoring import BoxScorer, ModelFiles
from tests.support.procs import REPO_ROOT, python_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLASS = "defect"
THRESHOLD = 0.75
SURFACE = "leather"
STRENGTH = 5.0


@pytest.fixture(scope="module")
def detection_env(real_cloud) -> dict[str, str]:
    pytest.importorskip("intellioptics_training.detection", reason="the training library's detection head")
    return {
        **real_cloud.worker_env("worker-detection"),
        "INTELLIOPTICS_DATA_DIR": str(REPO_ROOT / "data"),
        "INTELLIOPTICS_DETECTION_EPOCHS": "15",
    }


def _examples(n: int, seed: int) -> list:
    from intellioptics_training.synthetic import generate_detection

    return list(generate_detection(n, seed=seed, strength=STRENGTH, surface=SURFACE))


def _png(example) -> bytes:
    from intellioptics_training.synthetic import encode_png

    return encode_png(example.rgb)


def _rois(example) -> list[dict]:
    return [
        {"label": CLASS, "geometry": {"left": cx - w / 2, "top": cy - h / 2, "right": cx + w / 2, "bottom": cy + h / 2}}
        for _, cx, cy, w, h in example.boxes
    ]


def _create(real_cloud, mode: str, most: int) -> str:
    key = "max_count" if mode == "COUNT" else "max_num_bboxes"
    body = {
        "name": f"{mode.lower()}-tray",
        "query": "How many defects?" if mode == "COUNT" else "Where are the defects?",
        "mode": mode,
        "mode_configuration": {"class_name": CLASS, key: most},
        "confidence_threshold": THRESHOLD,
    }
    detector_id = real_cloud.call("POST", "/v1/detectors", json=body).json()["id"]
    real_cloud.call("POST", f"/v1/detectors/{detector_id}/settings", json={"retrain_every_n_labels": 100_000})
    return detector_id


def _label(real_cloud, detector_id: str, mode: str, examples: Sequence, with_boxes: bool = True) -> list[str]:
    """Submit and label as the SDK's ``add_label`` does (same route, same body)."""
    ids = []
    for example in examples:
        iq = real_cloud.call(
            "POST",
            "/v1/image-queries",
            params={"detector_id": detector_id, "want_async": "true"},
            content=_png(example),
            headers={"content-type": "image/png"},
        ).json()["id"]
        rois = _rois(example) if with_boxes else []
        if mode == "COUNT":
            body = {"image_query_id": iq, "label": str(len(example.boxes))}
        else:
            body = {"image_query_id": iq, "label": "BOUNDING_BOX" if rois else "NO_OBJECTS"}
        if rois:
            body["rois"] = rois
        real_cloud.call("POST", "/v1/labels", json=body)
        ids.append(iq)
    return ids


def _run_job(real_cloud, env, detector_id: str, exit_code: int = 0) -> dict:
    """One ``--once`` worker; it exits 1 when its job failed."""
    job_id = real_cloud.create_job(detector_id, trainer="auto")
    worker = python_module("worker-detection", "intellioptics_worker", real_cloud.log_dir, env, "--once").start()
    assert real_cloud.wait_exit(worker, 400) == exit_code, worker.tail(60)
    return real_cloud.job(job_id)


def _files(real_cloud, detector_id: str, version: int) -> ModelFiles:
    urls = real_cloud.call("GET", f"/edge-api/v1/fetch-model-urls/{detector_id}").json()
    base = f"/v1/detectors/{detector_id}/models/{version}/download"
    return ModelFiles(
        primary=real_cloud.call("GET", f"{base}?kind=primary").content,
        primary_config=PipelineConfig.from_dict(urls["pipeline_config"]),
        oodd=real_cloud.call("GET", f"{base}?kind=oodd").content,
        oodd_config=PipelineConfig.from_dict(urls["oodd_pipeline_config"]),
    )


def test_count_detector_trains_from_sdk_labels_and_keeps_its_promise(real_cloud, detection_env):
    detector = _create(real_cloud, "COUNT", 3)
    train = _examples(24, seed=7)
    _label(real_cloud, detector, "COUNT", train)
    # A count without boxes says how many but not where: it cannot train a box model.
    unboxed = [e for e in _examples(6, seed=70) if e.boxes][:2]
    _label(real_cloud, detector, "COUNT", unboxed, with_boxes=False)
    unclear = _label(real_cloud, detector, "COUNT", _examples(1, seed=71))
    real_cloud.call("POST", "/v1/labels", json={"image_query_id": unclear[0], "label": "UNCLEAR"})

    started = time.monotonic()
    job = _run_job(real_cloud, detection_env, detector)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    metrics = model["metrics"]
    assert model["status"] == "active" and model["trainer"] == "detection-centre-heatmap"
    assert model["training_set_size"] == 24 and metrics["n"] == 24
    assert model["class_counts"] == {
        "images": 24,
        "objects": sum(len(e.boxes) for e in train),
        "empty_images": sum(1 for e in train if not e.boxes),
    }
    # (UNCLEAR never leaves the cloud: its dataset holds only labels that say something.)
    assert metrics["skipped_labels"] == {"count_without_boxes": 2}
    assert metrics["evaluation"]["method"] == "cross-fit" and metrics["evaluation"]["folds"] == 3
    assert metrics["headline"] == "count exact-match" and metrics["count_exact_match"] >= 0.6, metrics
    calibration = metrics["calibration"]
    assert calibration["threshold"] == THRESHOLD and 0 < calibration["box_threshold"] < 1
    # Out of fold, the confident counts were right at least T of the time (the promotion gate).
    if metrics["confident_accuracy"] is not None:
        assert metrics["confident_accuracy"] >= THRESHOLD, metrics

    # The registered binaries on images no model saw, read as the edge reads them.
    files = _files(real_cloud, detector, model["version"])
    assert files.primary_config.mode == "COUNT" and files.primary_config.detection.max_count == 3
    scorer = BoxScorer(files)
    unseen = _examples(16, seed=2026)
    results = [scorer.result(_png(e)) for e in unseen]
    right = [r.count == min(len(e.boxes), 3) for r, e in zip(results, unseen, strict=True)]
    confident = [ok for ok, r in zip(right, results, strict=True) if r.confidence >= THRESHOLD]
    print(
        f"\nCOUNT job: {elapsed:.1f} s; out of fold: exact {metrics['count_exact_match']}, "
        f"MAE {metrics['count_mae']}, coverage {metrics['confident_coverage']}; unseen: {sum(right)}/16 exact, "
        f"{sum(confident)}/{len(confident)} confident right"
    )
    assert sum(right) >= 10, right
    assert sum(confident) >= int(THRESHOLD * len(confident)), confident

    # More labels: the second version is compared with v1 on images v1 never trained on.
    more = _examples(10, seed=8)
    fresh = set(_label(real_cloud, detector, "COUNT", more))
    job = _run_job(real_cloud, detection_env, detector)
    assert job["status"] == "succeeded", job
    (second,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    comparison = second["metrics"]["comparison"]
    assert comparison["active_version"] == model["version"]
    assert set(comparison["image_query_ids"]) == fresh, comparison
    assert comparison["new"]["n"] == comparison["active"]["n"] == len(more)
    assert "count exact-match" in second["decision"]["reason"], second["decision"]
    assert second["training_set_size"] == 34


def test_bounding_box_detector_refuses_too_few_labels_then_trains(real_cloud, detection_env):
    detector = _create(real_cloud, "BOUNDING_BOX", 3)
    _label(real_cloud, detector, "BOUNDING_BOX", _examples(5, seed=30))
    job = _run_job(real_cloud, detection_env, detector, exit_code=1)
    assert job["status"] == "failed" and "at least 8 labeled images" in job["error"], job
    assert not real_cloud.models(detector)

    _label(real_cloud, detector, "BOUNDING_BOX", _examples(19, seed=31))
    job = _run_job(real_cloud, detection_env, detector)
    assert job["status"] == "succeeded", job
    (model,) = real_cloud.models(detector)
    metrics = model["metrics"]
    assert metrics["headline"] == "F1 at IoU 0.3" and metrics["n"] == 24
    assert metrics["f1_iou30"] >= 0.6 and metrics["map50"] is not None, metrics
    files = _files(real_cloud, detector, model["version"])
    scorer = BoxScorer(files)
    unseen = _examples(12, seed=2027)
    found = total = hits = 0
    from intellioptics_common.anomaly import Box
    from intellioptics_training.detection import match

    for example in unseen:
        result = scorer.result(_png(example))
        assert result.label in ("BOUNDING_BOX", "NO_OBJECTS", "GREATER_THAN_MAX")
        assert len(result.boxes) <= 3 and all(0 <= b.left < b.right <= 1 for b in result.boxes)
        truth = [Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 1.0, CLASS) for _, cx, cy, w, h in example.boxes]
        hits += sum(match(result.boxes, truth, 0.3))
        found += len(result.boxes)
        total += len(truth)
    figures = {k: metrics[k] for k in ("f1_iou30", "recall_iou30", "precision_iou30", "map50", "count_exact_match")}
    print(f"\nBOUNDING_BOX unseen: {hits} hits of {total} objects, {found} boxes; out of fold {figures}")
    assert hits >= 0.6 * total and hits >= 0.6 * found, (hits, total, found)
