"""The worker trains a depth version from RGB + depth pairs labelled through a REAL cloud
API process, with the REAL training library: the pairs go in as the edge sends them
(multipart ``image`` + ``depth``), the dataset says which examples have depth, the job
trains ``train_depth_detector`` cross-fitted like the RGB trainer (an out-of-fold answer
for every pair), skips and counts the labels without depth, and the registered package
asks for depth: the cloud then answers a pair from it and refuses an image without one.

The pairs are the development set's metal surface with a 4 mm dent in the middle
(``tests/support/depth_models.py``): 16 pairs train in about a minute on 2 cores."""

from __future__ import annotations

import time

import pytest

from intellioptics_common.model_package import PipelineConfig
from intellioptics_worker.scoring import ModelFiles, Scorer
from tests.support.procs import REPO_ROOT, python_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_CLASS = 9
THRESHOLD = 0.55


@pytest.fixture(scope="module")
def depth_env(real_cloud) -> dict[str, str]:
    pytest.importorskip("intellioptics_training.depth", reason="the training library's depth trainer")
    if not (REPO_ROOT / "data" / "backbones" / "efficientnet_lite0" / "backbone.onnx").is_file():
        pytest.skip("the backbone is missing: run `make backbone`")
    return {**real_cloud.worker_env("worker-depth"), "INTELLIOPTICS_DATA_DIR": str(REPO_ROOT / "data")}


def _submit_pair(real_cloud, detector_id: str, image: bytes, depth: bytes | None, **params: str):  # type: ignore[no-untyped-def]
    files = {"image": ("frame.png", image, "image/png")}
    if depth is not None:
        files["depth"] = ("frame_depth.npy", depth, "application/x-npy")
    return real_cloud.http.post("/v1/image-queries", params={"detector_id": detector_id, **params}, files=files)


def test_pairs_labelled_in_the_cloud_train_a_depth_version_that_asks_for_depth(real_cloud, depth_env) -> None:
    from tests.support.depth_models import cases

    body = {"name": "dents", "query": "Is there a dent?", "confidence_threshold": THRESHOLD}
    detector = real_cloud.call("POST", "/v1/detectors", json=body).json()["id"]
    real_cloud.call("POST", f"/v1/detectors/{detector}/settings", json={"retrain_every_n_labels": 100_000})
    pairs = cases(PER_CLASS, seed=21)
    for index, case in enumerate(pairs):
        # Two labels of images sent without depth: a depth detector skips and counts them.
        depth = None if index < 2 else case.depth_npy
        response = _submit_pair(real_cloud, detector, case.rgb_png, depth, want_async="true")
        assert response.status_code == 201, response.text
        real_cloud.call("POST", "/v1/labels", json={"image_query_id": response.json()["id"], "label": case.label})
    dataset = real_cloud.call("GET", f"/v1/detectors/{detector}/dataset").json()
    assert sum(row["depth_url"] is None for row in dataset) == 2 and len(dataset) == 2 * PER_CLASS

    job_id = real_cloud.create_job(detector, trainer="fast")
    started = time.monotonic()
    worker = python_module("worker-depth", "intellioptics_worker", real_cloud.log_dir, depth_env, "--once").start()
    assert real_cloud.wait_exit(worker, 600) == 0, worker.tail(60)
    elapsed = time.monotonic() - started
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded", job
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    metrics = model["metrics"]
    assert model["trainer"] == "fast-depth" and model["training_set_size"] == 2 * PER_CLASS - 2
    assert metrics["skipped_labels"] == {"no_depth": 2}
    evaluation = metrics["evaluation"]
    assert evaluation["method"] == "cross-fit" and evaluation["folds"] == 3
    assert set(evaluation["image_query_ids"]) == set(model["dataset_image_query_ids"])  # every pair, out of fold
    assert len(model["dataset_image_query_ids"]) == 2 * PER_CLASS - 2
    assert metrics["n"] == 2 * PER_CLASS - 2 and metrics["balanced_accuracy"] >= 0.85, metrics
    calibration = metrics["calibration"]  # the depth trainer's, from the same out-of-fold answers
    assert calibration["threshold"] == THRESHOLD and calibration["oof_n"] == 2 * PER_CLASS - 2, calibration
    assert model["status"] == "active", model["decision"]

    # The package asks for depth: its pipeline config has the depth input, and it takes two inputs.
    info = real_cloud.call("GET", f"/edge-api/v1/fetch-model-urls/{detector}").json()
    config = PipelineConfig.from_dict(info["pipeline_config"])
    assert config.depth is not None and (config.depth.height, config.depth.width) == (96, 96)
    files = ModelFiles(
        primary=real_cloud.call(
            "GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=primary"
        ).content,
        primary_config=config,
        oodd=real_cloud.call("GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=oodd").content,
        oodd_config=PipelineConfig.from_dict(info["oodd_pipeline_config"]),
    )
    unseen = cases(3, seed=22)
    scorer = Scorer(files)
    expected = [scorer.score(case.rgb_png, case.depth_npy) for case in unseen]
    assert [answer.label for answer in expected] == [case.label for case in unseen]

    # The cloud answers with the active depth version from the pair, as the worker scores it.
    for case, answer in zip(unseen, expected, strict=True):
        answered = _submit_pair(real_cloud, detector, case.rgb_png, case.depth_npy)
        assert answered.status_code == 201, answered.text
        result = answered.json()["result"]
        assert result["source"] == "ALGORITHM" and result["label"] == answer.label, result
        assert result["confidence"] == pytest.approx(answer.confidence, abs=1e-4)
    refused = _submit_pair(real_cloud, detector, unseen[0].rgb_png, None)
    assert refused.status_code == 400 and refused.json()["code"] == "depth_required"
    print(f"\ndepth job, worker start to registered version: {elapsed:.1f} s; metrics: {metrics}")
