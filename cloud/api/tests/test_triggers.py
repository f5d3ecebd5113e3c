"""Automatic training jobs: after N new labels (default 10, per-detector setting) and on a schedule."""

from __future__ import annotations

from intellioptics_cloud.services.triggers import RetrainScheduler


def _label(admin, helpers, detector_id: str, labels: list[str]) -> None:
    for index, label in enumerate(labels):
        iq = admin.submit(detector_id, helpers.jpeg(brightness=20 + index * 3)).json()["id"]
        response = admin.post("/v1/labels", json={"image_query_id": iq, "label": label})
        assert response.status_code == 201, response.text


def _jobs(admin, detector_id: str) -> list[dict]:
    response = admin.get("/v1/training-jobs", params={"detector_id": detector_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_ten_new_labels_queue_one_job_and_the_count_restarts_after_each_job(admin, helpers):
    detector = admin.create_detector()["id"]
    _label(admin, helpers, detector, ["YES", "NO"] * 4 + ["UNCLEAR", "YES"])  # 9 that count
    assert _jobs(admin, detector) == []
    _label(admin, helpers, detector, ["NO"])
    (job,) = _jobs(admin, detector)
    assert job["trigger"] == "labels" and job["status"] == "queued" and job["trainer"] == "auto"
    _label(admin, helpers, detector, ["YES"] * 10)  # a job is open: no second one
    assert len(_jobs(admin, detector)) == 1
    assert admin.post(f"/v1/training-jobs/{job['id']}/cancel").status_code == 200
    # The 10 labelled while that job was open are in no model: the next label queues a job.
    _label(admin, helpers, detector, ["NO"])
    second = _jobs(admin, detector)[0]
    assert second["trigger"] == "labels" and second["id"] != job["id"]
    assert admin.post(f"/v1/training-jobs/{second['id']}/cancel").status_code == 200
    # Counted from the last job: 9 more are not enough (a failed job is not re-queued at every label).
    _label(admin, helpers, detector, ["YES"] * 9)
    assert len(_jobs(admin, detector)) == 2
    _label(admin, helpers, detector, ["YES"])
    assert [j["trigger"] for j in _jobs(admin, detector)] == ["labels"] * 3


def test_per_detector_setting(admin, helpers):
    detector = admin.create_detector()["id"]
    response = admin.post(f"/v1/detectors/{detector}/settings", json={"retrain_every_n_labels": 3})
    assert response.status_code == 200, response.text
    _label(admin, helpers, detector, ["YES", "NO"])
    assert _jobs(admin, detector) == []
    _label(admin, helpers, detector, ["YES"])
    assert len(_jobs(admin, detector)) == 1


def test_null_turns_automatic_jobs_off_and_an_unset_field_keeps_the_setting(admin, helpers, client):
    detector = admin.create_detector()["id"]
    path = f"/v1/detectors/{detector}/settings"
    assert admin.get(path).json()["retrain_every_n_labels"] == 10  # a new detector: the default
    assert admin.post(path, json={"retrain_every_n_labels": None}).json()["retrain_every_n_labels"] is None
    assert admin.post(path, json={"promotion_policy": "manual"}).json()["retrain_every_n_labels"] is None
    _label(admin, helpers, detector, ["YES", "NO"] * 6)
    assert _jobs(admin, detector) == []
    resources = client.app.state.resources
    assert RetrainScheduler(resources.sessions, resources.queue, interval_s=3600).tick() == []
    # Manual jobs are still allowed, and turning it back on counts the labels since then.
    assert admin.post(f"/v1/detectors/{detector}/training-jobs", json={}).status_code == 201
    assert admin.post(path, json={"retrain_every_n_labels": 2}).json()["retrain_every_n_labels"] == 2
    (manual,) = _jobs(admin, detector)
    assert admin.post(f"/v1/training-jobs/{manual['id']}/cancel").status_code == 200
    _label(admin, helpers, detector, ["YES", "NO"])
    assert [j["trigger"] for j in _jobs(admin, detector)] == ["labels", "manual"]


def test_schedule_queues_jobs_for_detectors_with_new_labels(admin, helpers, client):
    with_labels = admin.create_detector()["id"]
    without = admin.create_detector()["id"]
    _label(admin, helpers, with_labels, ["YES", "NO"])
    resources = client.app.state.resources
    scheduler = RetrainScheduler(resources.sessions, resources.queue, interval_s=3600)
    created = scheduler.tick()
    (job,) = _jobs(admin, with_labels)
    assert created == [job["id"]] and job["trigger"] == "schedule"
    assert _jobs(admin, without) == []
    assert scheduler.tick() == []  # the job is still open
