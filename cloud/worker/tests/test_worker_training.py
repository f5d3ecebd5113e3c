"""The worker with the REAL training library (fast trainer) on the generated hard
development set, labelled through a REAL cloud API process: a job is trained,
evaluated, registered with its metrics and promoted; a worse version (trained on
flipped labels) stays a candidate with the reason recorded."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT, ManagedProcess, python_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_CLASS = 12


@pytest.fixture(scope="module")
def library_env(real_cloud) -> dict[str, str]:
    pytest.importorskip("intellioptics_training.trainer", reason="the training library's train_detector API")
    return {**real_cloud.worker_env("worker-library"), "INTELLIOPTICS_DATA_DIR": str(REPO_ROOT / "data")}


def _hard_images(per_class: int, seed: int) -> list[tuple[bytes, str]]:
    from intellioptics_training.synthetic import encode_png, generate

    return [(encode_png(image.rgb), image.label) for image in generate("binary", per_class, seed)]


@pytest.fixture(scope="module")
def detector(real_cloud, library_env) -> str:
    detector_id = real_cloud.create_detector("hard-surfaces")
    real_cloud.label(detector_id, _hard_images(PER_CLASS, seed=11))
    return detector_id


def test_job_is_trained_evaluated_registered_and_promoted(real_cloud, library_env, detector):
    job_id = real_cloud.create_job(detector, trainer="fast")
    started = time.monotonic()
    worker = python_module("worker-library", "intellioptics_worker", real_cloud.log_dir, library_env, "--once").start()
    assert real_cloud.wait_exit(worker, 150) == 0, worker.tail(60)
    elapsed = time.monotonic() - started
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    metrics = model["metrics"]
    assert model["status"] == "active" and model["decision"]["reason"] == metrics["promotion"]["reason"]
    assert metrics["evaluation"]["method"] == "holdout" and metrics["n"] == 6
    # Real training on the hard set, judged on images it never saw: better than chance.
    assert metrics["balanced_accuracy"] >= 0.5 and metrics["accuracy"] > 0.5, metrics
    assert model["trainer"].startswith("fast") and model["training_set_size"] == 18  # the job asked for fast
    print(f"\nfirst job, worker start to registered version: {elapsed:.1f} s; metrics: {metrics}")


def test_worse_version_stays_candidate_with_the_reason_recorded(real_cloud, library_env, detector):
    if not any(m["status"] == "active" for m in real_cloud.models(detector)):
        test_job_is_trained_evaluated_registered_and_promoted(real_cloud, library_env, detector)
    active = next(m for m in real_cloud.models(detector) if m["status"] == "active")
    real_cloud.label(detector, _hard_images(4, seed=12))  # fresh images the active version never saw
    job_id = real_cloud.create_job(detector, trainer="fast")
    command = [sys.executable, str(Path(__file__).with_name("flipped_worker.py")), "--once"]
    worker = ManagedProcess("worker-flipped", command, real_cloud.log_dir / "worker-flipped.log", env=library_env)
    assert real_cloud.wait_exit(worker.start(), 150) == 0, worker.tail(60)
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded", job
    versions = {m["version"]: m for m in real_cloud.models(detector)}
    new = versions[job["model_version"]]
    assert new["status"] == "candidate" and versions[active["version"]]["status"] == "active"
    promotion = new["metrics"]["promotion"]
    assert promotion["action"] == "candidate" and promotion["reason"].startswith("worse than the active version")
    assert new["decision"]["action"] == "keep_candidate" and new["decision"]["reason"] == promotion["reason"]
    comparison = new["metrics"]["comparison"]
    assert comparison["active_version"] == active["version"]
    assert comparison["new"]["balanced_accuracy"] < comparison["active"]["balanced_accuracy"]
    assert not set(comparison["image_query_ids"]) & set(active["dataset_image_query_ids"])
