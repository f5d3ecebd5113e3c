"""Worker processes against a REAL cloud API process: claim and lease, progress,
cancellation, kill -9 and retry, SIGTERM, two workers on one queue.

The workers are real ``intellioptics_worker`` processes (``colour_worker.py`` runs its
``main``) whose trainer is the colour trainer, slowed to a known pace: what is tested
here is the worker's and the cloud's behaviour around a job, and the pace lets a test
act mid-training. Real training is in ``test_worker_training.py``."""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.support.procs import ManagedProcess

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_CLASS = 12
LAUNCHER = Path(__file__).with_name("colour_worker.py")


def _worker(cloud, name: str, *args: str, shuffle: bool = False) -> ManagedProcess:
    env = {**cloud.worker_env(name), "COLOUR_SHUFFLE": "1" if shuffle else "0"}
    return ManagedProcess(name, [sys.executable, str(LAUNCHER), *args], cloud.log_dir / f"{name}.log", env=env)


@pytest.fixture(scope="module")
def detector(real_cloud, make_png_module) -> str:
    detector_id = real_cloud.create_detector("colour-parts")
    images = [
        (make_png_module(label, 100 * i + k), label) for i in range(PER_CLASS) for k, label in enumerate(("NO", "YES"))
    ]
    real_cloud.label(detector_id, images)
    return detector_id


def test_a_job_is_claimed_trained_registered_and_promoted(real_cloud, detector):
    job_id = real_cloud.create_job(detector)
    worker = _worker(real_cloud, "worker-once", "--once").start()
    assert real_cloud.wait_exit(worker, 60) == 0, worker.tail(60)
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["progress"] == 1.0, job
    assert [e["epoch"] for e in job["epochs"]] == list(range(1, 11))  # per-epoch metrics reached the API
    (model,) = [m for m in real_cloud.models(detector) if m["version"] == job["model_version"]]
    assert model["status"] == "active" and model["decision"]["action"] == "activate"
    assert model["metrics"]["balanced_accuracy"] == 1.0 and model["metrics"]["evaluation"]["method"] == "cross-fit"
    assert model["training_set_size"] == 24 and len(model["dataset_image_query_ids"]) == 24  # every label trains
    # --once with an empty queue: exits 0 at once
    idle = _worker(real_cloud, "worker-idle", "--once").start()
    assert real_cloud.wait_exit(idle, 30) == 0 and "no queued training job" in idle.tail(5)


def test_a_worse_version_stays_candidate_with_the_reason_recorded(real_cloud, detector, make_png_module):
    active = next((m for m in real_cloud.models(detector) if m["status"] == "active"), None)
    if active is None:
        test_a_job_is_claimed_trained_registered_and_promoted(real_cloud, detector)
        active = next(m for m in real_cloud.models(detector) if m["status"] == "active")
    # Fresh labels the active version never trained on, then a version trained on shuffled labels.
    real_cloud.label(
        detector,
        [(make_png_module(label, 9000 + 2 * i + k), label) for i in range(4) for k, label in enumerate(("NO", "YES"))],
    )
    job_id = real_cloud.create_job(detector)
    worker = _worker(real_cloud, "worker-shuffled", "--once", shuffle=True).start()
    assert real_cloud.wait_exit(worker, 60) == 0, worker.tail(60)
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


def test_a_first_version_whose_confident_answers_fall_short_of_the_threshold_stays_candidate(
    real_cloud, make_png_module
):
    detector = real_cloud.create_detector("colour-parts-unlearnable")
    real_cloud.label(
        detector,
        [
            (make_png_module(label, 500 + 2 * i + k), label)
            for i in range(PER_CLASS)
            for k, label in enumerate(("NO", "YES"))
        ],
    )
    job_id = real_cloud.create_job(detector)
    # Shuffled labels: the colour model stays sure of itself and is wrong about half the time.
    worker = _worker(real_cloud, "worker-overconfident", "--once", shuffle=True).start()
    assert real_cloud.wait_exit(worker, 60) == 0, worker.tail(60)
    job = real_cloud.job(job_id)
    assert job["status"] == "succeeded", job
    (model,) = real_cloud.models(detector)  # no active version to compare with, and still not activated
    metrics = model["metrics"]
    assert model["status"] == "candidate" and model["decision"]["action"] == "keep_candidate"
    assert metrics["confident_accuracy"] < 0.9 <= metrics["threshold"], metrics
    assert model["decision"]["reason"].startswith("its confident out-of-fold answers fall short of the threshold")
    low, high = metrics["intervals_95"]["confident_accuracy"]
    assert low < metrics["confident_accuracy"] < high < 1.0


def test_cancellation_reaches_the_worker_and_nothing_is_registered(real_cloud, detector):
    versions_before = len(real_cloud.models(detector))
    job_id = real_cloud.create_job(detector)
    worker = _worker(real_cloud, "worker-cancel", "--once").start()
    try:
        real_cloud.wait_progress(job_id, 0.2)  # in the training phase
        real_cloud.call("POST", f"/v1/training-jobs/{job_id}/cancel")
        assert real_cloud.wait_exit(worker, 20) == 0  # cancelled is not a worker failure
    finally:
        worker.kill()
    assert f"job {job_id} cancelled" in worker.tail(20)
    assert real_cloud.job(job_id)["status"] == "cancelled"
    assert len(real_cloud.models(detector)) == versions_before


def test_kill_9_mid_training_leaves_nothing_and_the_job_is_retried(real_cloud, detector):
    versions_before = {m["version"] for m in real_cloud.models(detector)}
    job_id = real_cloud.create_job(detector)
    victim = _worker(real_cloud, "worker-victim", "--once").start()
    try:
        real_cloud.wait_progress(job_id, 0.3)
    finally:
        victim.kill(signal.SIGKILL)
    assert real_cloud.job(job_id)["status"] == "running"
    assert {m["version"] for m in real_cloud.models(detector)} == versions_before  # nothing half-registered

    rescuer = _worker(real_cloud, "worker-rescuer").start()  # loop mode: claims once the lease expired
    try:
        job = real_cloud.wait_job(job_id, ("succeeded", "failed"), timeout=60, worker=rescuer)
    finally:
        rescuer.stop()
    assert rescuer.poll() == 0, rescuer.tail(40)  # SIGTERM while idle: a clean exit
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    new_versions = {m["version"] for m in real_cloud.models(detector)} - versions_before
    assert new_versions == {job["model_version"]}  # exactly one version for the job


def test_sigterm_mid_job_hands_the_job_back_without_completing_it(real_cloud, detector):
    versions_before = len(real_cloud.models(detector))
    job_id = real_cloud.create_job(detector)
    worker = _worker(real_cloud, "worker-term").start()
    try:
        real_cloud.wait_progress(job_id, 0.2)
        worker.kill(signal.SIGTERM)
        assert real_cloud.wait_exit(worker, 20) == 0
    finally:
        worker.kill()
    assert "goes back to the queue" in worker.tail(20)
    job = real_cloud.job(job_id)
    assert job["status"] == "running" and len(real_cloud.models(detector)) == versions_before
    # The lease runs out; the next worker's claim gets the job again.
    rescuer = _worker(real_cloud, "worker-after-term").start()
    try:
        assert real_cloud.wait_job(job_id, ("succeeded", "failed"), 60, rescuer)["status"] == "succeeded"
    finally:
        rescuer.stop()


def test_two_workers_never_run_the_same_job(real_cloud, detector):
    versions_before = {m["version"] for m in real_cloud.models(detector)}
    jobs = [real_cloud.create_job(detector) for _ in range(4)]
    workers = [_worker(real_cloud, f"worker-pool-{i}") for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        finished = [real_cloud.wait_job(j, ("succeeded", "failed"), 90, workers[0]) for j in jobs]
    finally:
        stoppers = [threading.Thread(target=w.stop) for w in workers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
    assert [w.poll() for w in workers] == [0, 0]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in finished), finished
    runs = [re.findall(r"job (tj_\w+): detector", w.tail(500)) for w in workers]
    assert sorted(runs[0] + runs[1]) == sorted(jobs), runs  # each job ran once, in one worker
    assert runs[0] and runs[1], runs  # and both workers took part
    new_versions = {m["version"] for m in real_cloud.models(detector)} - versions_before
    assert new_versions == {j["model_version"] for j in finished} and len(new_versions) == len(jobs)
