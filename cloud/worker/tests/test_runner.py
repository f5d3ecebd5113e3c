"""The job logic against an in-memory cloud (MockTransport) and a tiny real ONNX trainer."""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest

from intellioptics_worker.cloud import CloudClient
from intellioptics_worker.errors import CloudError
from intellioptics_worker.loop import Worker
from intellioptics_worker.runner import JobRunner
from tests.support.hostile_models import external_data_model


def _label(cloud, per_class: int, seed: int = 0, classes=("NO", "YES")) -> None:
    for i in range(per_class):
        for name in classes:
            cloud.add_label(name, seed * 1000 + i * 10 + classes.index(name))


def _runner(cloud, trainer, settings, stop=None):
    return JobRunner(cloud.client(), trainer, settings, stop or threading.Event())


def test_first_job_trains_on_every_label_registers_and_activates(cloud, color_trainer_class, settings):
    _label(cloud, 12)
    cloud.add_label("UNCLEAR", 999, image_label="YES")
    job_id = cloud.add_job()
    trainer = color_trainer_class()
    outcome = Worker(
        cloud.client(), _runner(cloud, trainer, settings), poll_interval_s=1, stop_requested=threading.Event()
    ).run_once()

    assert outcome is not None and outcome.status == "succeeded" and outcome.model_version == 1
    assert cloud.jobs[job_id]["status"] == "succeeded" and cloud.jobs[job_id]["model_version"] == 1
    (model,) = cloud.models
    manifest = model["manifest"]
    assert model["status"] == "active" and manifest["activate"] is True
    metrics = manifest["metrics"]
    assert metrics["evaluation"] == {
        "method": "cross-fit",
        "folds": 3,
        "image_query_ids": manifest["dataset_image_query_ids"],  # every image measured out of fold
    }
    assert metrics["balanced_accuracy"] == 1.0 and metrics["n"] == 24  # colours are easy: a real check of scoring
    low, high = metrics["intervals_95"]["confident_accuracy"]
    assert 0.8 < low < 0.9 and high == 1.0  # 24 of 24 right: Wilson's 95 % interval is [0.862, 1]
    assert metrics["skipped_labels"] == {"unclear": 1}
    assert trainer.calls == [24]  # one training run, on every label
    assert manifest["training_set_size"] == 24 and manifest["class_counts"] == {"NO": 12, "YES": 12}
    assert manifest["training_job_id"] == job_id
    assert metrics["promotion"]["action"] == "activate"
    # progress was reported, monotonically, with the trainer's epochs
    values = [p["progress"] for p in cloud.progress]
    assert values == sorted(values) and values[-1] >= 0.95
    assert [e["epoch"] for e in cloud.jobs[job_id]["epochs"]] == [1, 2, 3]


def test_folds_are_capped_by_the_smallest_class(cloud, color_trainer_class, settings):
    _label(cloud, 2)
    cloud.add_label("YES", 77)
    cloud.add_label("NO", 78)
    cloud.add_job()
    trainer = color_trainer_class()
    outcome = _runner(cloud, trainer, settings).run(cloud.client().claim_job())
    assert outcome.status == "succeeded"
    manifest = cloud.models[0]["manifest"]
    assert manifest["metrics"]["evaluation"]["folds"] == 3 and manifest["metrics"]["n"] == 6
    assert trainer.calls == [6] and manifest["training_set_size"] == 6


def test_overconfident_version_is_never_activated(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    cloud.add_job()
    outcome = _runner(cloud, color_trainer_class(shuffle_labels=True), settings).run(cloud.client().claim_job())
    assert outcome.status == "succeeded" and cloud.models[0]["status"] == "candidate"
    metrics = cloud.models[0]["manifest"]["metrics"]
    assert metrics["confident_accuracy"] < 0.9 and metrics["confident_coverage"] > 0.5  # sure, and wrong
    assert metrics["promotion"]["reason"].startswith("its confident out-of-fold answers fall short of the threshold")


def test_worse_model_stays_candidate_with_reason(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    cloud.add_job()
    assert _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job()).status == "succeeded"
    _label(cloud, 6, seed=1)  # new labels the active version never saw
    cloud.add_job()
    outcome = _runner(cloud, color_trainer_class(shuffle_labels=True), settings).run(cloud.client().claim_job())
    assert outcome.status == "succeeded" and outcome.model_version == 2
    assert [m["status"] for m in cloud.models] == ["active", "candidate"]
    manifest = cloud.models[1]["manifest"]
    assert manifest["activate"] is False
    promotion = manifest["metrics"]["promotion"]
    assert promotion["action"] == "candidate" and promotion["reason"].startswith("worse than the active version")
    comparison = manifest["metrics"]["comparison"]
    assert comparison["active_version"] == 1 and comparison["active"]["balanced_accuracy"] == 1.0
    # compared only on images version 1 did not train on
    assert not set(comparison["image_query_ids"]) & set(cloud.models[0]["dataset_image_query_ids"])


def test_equal_model_is_promoted_and_manual_policy_keeps_candidate(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    for _ in range(2):
        cloud.add_job()
        _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job())
    assert [m["status"] for m in cloud.models] == ["retired", "active"]
    assert cloud.models[1]["manifest"]["metrics"]["promotion"]["reason"].startswith("not worse")
    cloud.policy = "manual"
    cloud.add_job()
    _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job())
    assert cloud.models[2]["status"] == "candidate"
    assert cloud.models[2]["manifest"]["metrics"]["promotion"]["reason"].startswith("promotion policy is manual")


def test_multiclass_detector(fake_cloud_class, color_trainer_class, settings):
    cloud = fake_cloud_class(mode="MULTI_CLASS", class_names=("clean", "dent"))
    _label(cloud, 6, classes=("clean", "dent"))
    cloud.add_label("Dent", 5000, image_label="dent")  # class names match case-insensitively
    cloud.add_label("rust", 5001, image_label="dent")  # not a class of this detector
    cloud.add_job()
    assert _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job()).status == "succeeded"
    manifest = cloud.models[0]["manifest"]
    assert manifest["primary_pipeline_config"]["class_names"] == ["clean", "dent"]
    assert manifest["metrics"]["skipped_labels"] == {"unknown_class": 1}
    assert manifest["metrics"]["n"] == 13 and manifest["metrics"]["evaluation"]["method"] == "cross-fit"


def test_too_few_labels_fails_the_job_with_a_clear_message(cloud, color_trainer_class, settings):
    _label(cloud, 2)
    cloud.add_label("YES", 77)
    job_id = cloud.add_job()
    outcome = _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job())
    assert outcome.status == "failed"
    assert cloud.jobs[job_id]["status"] == "failed"
    assert "at least 3 human labels" in cloud.jobs[job_id]["error"] and "NO: 2" in cloud.jobs[job_id]["error"]
    assert cloud.models == []


def test_cancelled_job_stops_and_registers_nothing(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    job_id = cloud.add_job()
    cloud.cancel_after_progress = 2
    trainer = color_trainer_class(epochs=200)
    outcome = _runner(cloud, trainer, settings).run(cloud.client().claim_job())
    assert outcome.status == "cancelled"
    assert cloud.models == [] and cloud.jobs[job_id]["status"] == "cancelled"


def test_stop_request_leaves_the_job_to_its_lease(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    job_id = cloud.add_job()
    stop = threading.Event()
    stop.set()
    outcome = _runner(cloud, color_trainer_class(), settings, stop).run(cloud.client().claim_job())
    assert outcome.status == "interrupted"
    assert cloud.jobs[job_id]["status"] == "running"  # not completed: the lease brings it back
    assert cloud.models == []


def test_transient_cloud_errors_are_retried(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    cloud.add_job()
    cloud.fail_next = 3
    client = cloud.client()
    job = client.claim_job()
    assert job is not None and cloud.fail_next == 0
    assert _runner(cloud, color_trainer_class(), settings).run(job).status == "succeeded"


@pytest.mark.parametrize("status", [400, 403])
def test_client_errors_are_not_retried(cloud, status):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json={"detail": "no", "code": "x"})

    client = CloudClient("http://x", "t", transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with pytest.raises(CloudError) as info:
        client.claim_job()
    assert info.value.http_status == status and len(calls) == 1


def test_upload_racing_another_version_is_retried(cloud, color_trainer_class, settings):
    _label(cloud, 10)
    cloud.add_job()
    original = cloud.handle
    conflicts = []

    def racing(request):
        if request.method == "POST" and request.url.path.endswith("/models") and not conflicts:
            conflicts.append(request)
            return httpx.Response(
                409, json={"detail": "Another version was uploaded at the same moment", "code": "conflict"}
            )
        return original(request)

    cloud.handle = racing
    outcome = _runner(cloud, color_trainer_class(), settings).run(cloud.client().claim_job())
    assert outcome.status == "succeeded" and len(conflicts) == 1 and len(cloud.models) == 1


def test_a_model_with_external_data_is_never_uploaded(cloud, color_trainer_class, settings):
    """The worker refuses what the cloud would refuse before sending it: a trained file
    that points at a path of this machine fails the job and no upload is made."""
    _label(cloud, 10)
    job_id = cloud.add_job()

    class LeakyTrainer(color_trainer_class):
        def train(self, *args, **kwargs):
            version = super().train(*args, **kwargs)
            files = dataclasses.replace(version.files, primary=external_data_model("Makefile", size=16))
            return dataclasses.replace(version, files=files)

    uploads = []
    original = cloud.handle

    def watching(request):
        if request.method == "POST" and request.url.path.endswith("/models"):
            uploads.append(request)
        return original(request)

    cloud.handle = watching
    outcome = _runner(cloud, LeakyTrainer(), settings).run(cloud.client().claim_job())
    assert outcome.status == "failed" and uploads == [] and cloud.models == []
    assert "external data" in cloud.jobs[job_id]["error"]
