"""The worker with the REAL training library (fast trainer) on the generated hard
development set, labelled through a REAL cloud API process: a job is claimed, trained,
registered with its out-of-fold metrics, and the registered binaries behave as the
calibration promised on images no model saw.

On this set a dozen labels per class leave any model near chance, so the test checks
that the metrics are true and that the version knows it (it answers nothing at T), not
that it is good; "a worse version stays a candidate" and "an overconfident version stays
a candidate" are tested with models bad by construction in ``test_worker_processes.py``."""

from __future__ import annotations

import time

import pytest

from intellioptics_common.model_package import PipelineConfig
from intellioptics_worker.scoring import ModelFiles, Scorer
from tests.support.procs import REPO_ROOT, python_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_CLASS = 10


@pytest.fixture(scope="module")
def library_env(real_cloud) -> dict[str, str]:
    pytest.importorskip("intellioptics_training.trainer", reason="the training library's train_detector API")
    return {**real_cloud.worker_env("worker-library"), "INTELLIOPTICS_DATA_DIR": str(REPO_ROOT / "data")}


def _hard_images(per_class: int, seed: int) -> list[tuple[bytes, str]]:
    from intellioptics_training.synthetic import encode_png, generate

    return [(encode_png(image.rgb), image.label) for image in generate("binary", per_class, seed)]


def library_config(real_cloud, detector_id: str, key: str) -> dict:
    return real_cloud.call("GET", f"/edge-api/v1/fetch-model-urls/{detector_id}").json()[key]


def test_job_trains_on_every_label_and_calibrates_from_out_of_fold_answers(real_cloud, library_env):
    detector = real_cloud.create_detector("hard-surfaces")
    images = _hard_images(PER_CLASS, seed=11)
    real_cloud.label(detector, images)
    job_id = real_cloud.create_job(detector, trainer="fast")
    started = time.monotonic()
    worker = python_module("worker-library", "intellioptics_worker", real_cloud.log_dir, library_env, "--once").start()
    assert real_cloud.wait_exit(worker, 400) == 0, worker.tail(60)
    elapsed = time.monotonic() - started
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    metrics = model["metrics"]
    assert model["decision"]["reason"] == metrics["promotion"]["reason"]
    assert model["trainer"].startswith("fast") and model["training_set_size"] == 2 * PER_CLASS  # every label
    evaluation = metrics["evaluation"]
    assert evaluation["method"] == "cross-fit" and evaluation["folds"] == 3 and metrics["n"] == 2 * PER_CLASS
    assert set(evaluation["image_query_ids"]) == set(model["dataset_image_query_ids"])
    assert set(metrics["intervals_95"]) == {"balanced_accuracy", "confident_coverage", "confident_accuracy"}
    # 20 labels cannot show 0.9 (20 right of 20 gives a lower bound of 0.88): the served
    # version must escalate everything, which is safe, so it may become active.
    calibration = metrics["calibration"]
    assert calibration["confident_n"] == 0 and calibration["threshold"] == 0.9, calibration
    assert metrics["confident_coverage"] == 0.0 and model["status"] == "active"
    # The registered binaries, run on images no model saw, answer nothing at T either.
    files = ModelFiles(
        primary=real_cloud.call(
            "GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=primary"
        ).content,
        primary_config=PipelineConfig.from_dict(library_config(real_cloud, detector, "pipeline_config")),
        oodd=real_cloud.call("GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=oodd").content,
        oodd_config=PipelineConfig.from_dict(library_config(real_cloud, detector, "oodd_pipeline_config")),
    )
    scorer = Scorer(files)
    unseen = _hard_images(8, seed=12)
    assert all(scorer.score(image).confidence < 0.9 for image, _ in unseen)
    print(f"\nfirst job, worker start to registered version: {elapsed:.1f} s; metrics: {metrics}")


def test_auto_job_with_only_good_labels_trains_an_anomaly_model(real_cloud, library_env):
    """A new line: 12 good parts and 2 defects labelled, too few defects for a classifier.
    The automatic trainer fits an anomaly model from the good images, measures it out of
    fold (goods cross-fitted, defects scored by the served version), and the cloud then
    answers a new defect with the anomaly's score, severity and boxes."""
    from intellioptics_training.synthetic import encode_png, generate_anomaly

    detector = real_cloud.create_detector("new-line-good-only")
    made = list(generate_anomaly("leather", 12, 3, seed=61, strength=4.0))
    labelled = [(encode_png(m.rgb), m.label) for m in made[:14]]
    real_cloud.label(detector, labelled)
    job_id = real_cloud.create_job(detector, trainer="auto")
    worker = python_module("worker-anomaly", "intellioptics_worker", real_cloud.log_dir, library_env, "--once").start()
    assert real_cloud.wait_exit(worker, 400) == 0, worker.tail(60)
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded", job
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    metrics = model["metrics"]
    assert model["trainer"] == "anomaly-patchcore" and model["training_set_size"] == 14, model
    assert metrics["support"] == {"NO": 12, "YES": 2} and metrics["n"] == 14, metrics
    assert metrics["calibration"]["good_images"] == 12 and metrics["calibration"]["target_false_alarm"] == 0.01
    assert metrics["per_class_recall"]["YES"] == 1.0, metrics  # strength-4 defects, never in the bank
    assert model["status"] == "active", model["decision"]
    config = library_config(real_cloud, detector, "pipeline_config")
    assert config["model_kind"] == "anomaly", config

    defect = made[14]
    answer = real_cloud.call(
        "POST",
        "/v1/image-queries",
        params={"detector_id": detector},
        content=encode_png(defect.rgb),
        headers={"content-type": "image/png"},
    ).json()
    assert answer["result"]["label"] == "YES" and answer["anomaly"]["anomaly_score"] >= 0.5, answer
    assert answer["rois"] and answer["rois"][0]["label"] == "anomaly", answer


def test_anomaly_trainer_is_refused_for_a_count_detector_with_a_clear_message(real_cloud, library_env):
    detector = real_cloud.call(
        "POST",
        "/v1/detectors",
        json={
            "name": "bolts-anomaly",
            "query": "How many bolts?",
            "mode": "COUNT",
            "mode_configuration": {"class_name": "bolt"},
        },
    ).json()["id"]
    job_id = real_cloud.create_job(detector, trainer="anomaly")
    worker = python_module(
        "worker-anomaly-count", "intellioptics_worker", real_cloud.log_dir, library_env, "--once"
    ).start()
    assert real_cloud.wait_exit(worker, 120) == 1, worker.tail(60)  # --once: 1 is "the job failed"
    job = real_cloud.job(job_id)
    assert job["status"] == "failed" and "cannot train one" in job["error"], job
