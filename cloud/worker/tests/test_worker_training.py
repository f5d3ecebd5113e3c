"""The worker with the REAL training library (fast trainer) on the generated hard
development set, labelled through a REAL cloud API process: a job is claimed, trained,
evaluated, registered with its metrics and promoted, and the registered binaries are the
ones that were evaluated (re-scored here from the registry: same numbers).

On this set a dozen labels per class leave any model near chance, so the test checks
that the metrics are true, not that they are high; "a worse version stays a candidate"
is tested with a model that is worse by construction in ``test_worker_processes.py``."""

from __future__ import annotations

import time

import pytest

from intellioptics_common.model_package import PipelineConfig
from intellioptics_worker.scoring import ModelFiles, Scorer, measure
from tests.support.procs import REPO_ROOT, python_module

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PER_CLASS = 12


@pytest.fixture(scope="module")
def library_env(real_cloud) -> dict[str, str]:
    pytest.importorskip("intellioptics_training.trainer", reason="the training library's train_detector API")
    return {**real_cloud.worker_env("worker-library"), "INTELLIOPTICS_DATA_DIR": str(REPO_ROOT / "data")}


def _hard_images(per_class: int, seed: int) -> list[tuple[bytes, str]]:
    from intellioptics_training.synthetic import encode_png, generate

    return [(encode_png(image.rgb), image.label) for image in generate("binary", per_class, seed)]


def library_config(real_cloud, detector_id: str, key: str) -> dict:
    return real_cloud.call("GET", f"/edge-api/v1/fetch-model-urls/{detector_id}").json()[key]


def test_job_is_trained_evaluated_registered_and_promoted(real_cloud, library_env):
    detector = real_cloud.create_detector("hard-surfaces")
    images = _hard_images(PER_CLASS, seed=11)
    labels = dict(zip(real_cloud.label(detector, images), [label for _, label in images], strict=True))
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
    # The registered binaries, downloaded and run on the evaluation images, give the recorded metrics.
    files = ModelFiles(
        primary=real_cloud.call(
            "GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=primary"
        ).content,
        primary_config=PipelineConfig.from_dict(library_config(real_cloud, detector, "pipeline_config")),
        oodd=real_cloud.call("GET", f"/v1/detectors/{detector}/models/{model['version']}/download?kind=oodd").content,
        oodd_config=PipelineConfig.from_dict(library_config(real_cloud, detector, "oodd_pipeline_config")),
    )
    scorer = Scorer(files)
    evaluated = metrics["evaluation"]["image_query_ids"]
    predictions = [scorer.score(real_cloud.call("GET", f"/v1/image-queries/{iq}/image").content) for iq in evaluated]
    again = measure([labels[iq] for iq in evaluated], predictions, ("NO", "YES"), 0.9).to_dict()
    for key in ("n", "accuracy", "balanced_accuracy", "confident_coverage", "confident_accuracy"):
        assert again[key] == metrics[key], (key, again, metrics)
    assert not set(evaluated) & set(model["dataset_image_query_ids"])
    assert model["trainer"].startswith("fast") and model["training_set_size"] == 18  # the job asked for fast
    print(f"\nfirst job, worker start to registered version: {elapsed:.1f} s; metrics: {metrics}")
