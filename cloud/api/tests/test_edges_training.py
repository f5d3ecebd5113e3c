"""Edges (register, heartbeat, metrics) and training jobs (people's side and workers' side)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime


def test_edge_register_heartbeat_list_and_metrics(admin) -> None:
    detector = admin.create_detector()
    device = admin.new_token("device")
    edge = device.post(
        "/v1/edges/register", json={"name": "line-1", "software_version": "0.1.0", "detector_ids": [detector["id"]]}
    )
    assert edge.status_code == 201
    edge_id = edge.json()["id"]
    beat = device.post(
        f"/v1/edges/{edge_id}/heartbeat",
        json={
            "software_version": "0.1.1",
            "detectors": [{"detector_id": detector["id"], "primary_version": 3, "oodd_version": 3}],
            "counters": {"iqs": 10, "escalations": 2},
        },
    )
    assert beat.status_code == 200
    assert beat.json()["software_version"] == "0.1.1" and beat.json()["detectors"][0]["primary_version"] == 3
    hour = datetime(2026, 1, 1, 10, 17, tzinfo=UTC).isoformat()
    report = {"edge_id": edge_id, "entries": [{"detector_id": detector["id"], "hour": hour, "counters": {"iqs": 5}}]}
    assert device.post("/v1/edge/report-metrics", json=report).status_code == 202
    listed = admin.get("/v1/edges").json()
    assert [e["name"] for e in listed] == ["line-1"] and listed[0]["last_seen"]
    detail = admin.get(f"/v1/edges/{edge_id}").json()
    assert detail["counters"] == {"iqs": 10, "escalations": 2}
    assert detail["hourly"] == []  # hours older than 48 h are not shown
    now = datetime.now(UTC).isoformat()
    for count in (1, 3):
        entry = {"detector_id": detector["id"], "hour": now, "counters": {"iqs": count}}
        device.post("/v1/edge/report-metrics", json={"edge_id": edge_id, "entries": [entry]})
    hourly = admin.get(f"/v1/edges/{edge_id}").json()["hourly"]
    assert len(hourly) == 1 and hourly[0]["counters"] == {"iqs": 3}
    assert device.post("/v1/edges/edge_nope1234567/heartbeat", json={"software_version": "1"}).status_code == 404
    assert device.post(f"/v1/edges/{edge_id}/heartbeat", json={"software_version": "1", "x": 1}).status_code == 422
    assert (
        admin.new_token("reviewer").post("/v1/edges/register", json={"name": "x", "software_version": "1"}).status_code
        == 403
    )


def test_training_job_lifecycle(admin) -> None:
    detector = admin.create_detector()
    worker = admin.new_token("worker")
    job = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={"trainer": "fast"})
    assert job.status_code == 201
    job = job.json()
    assert (job["status"], job["trigger"], job["trainer"], job["attempts"]) == ("queued", "manual", "fast", 0)
    assert admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={"trainer": "slow"}).status_code == 422
    claimed = worker.post("/v1/training-jobs/claim")
    assert claimed.status_code == 200 and claimed.json()["id"] == job["id"] and claimed.json()["status"] == "running"
    assert worker.post("/v1/training-jobs/claim").status_code == 204
    progress = worker.post(
        f"/v1/training-jobs/{job['id']}/progress",
        json={"progress": 0.5, "eta_s": 30, "message": "epoch 1", "epoch": {"epoch": 1, "loss": 0.4, "accuracy": 0.8}},
    ).json()
    assert progress["progress"] == 0.5 and progress["epochs"][0]["loss"] == 0.4
    assert worker.post(f"/v1/training-jobs/{job['id']}/progress", json={"progress": 2}).status_code == 422
    assert worker.post(f"/v1/training-jobs/{job['id']}/complete", json={}).status_code == 400
    done = worker.post(f"/v1/training-jobs/{job['id']}/complete", json={"model_version": 4}).json()
    assert done["status"] == "succeeded" and done["model_version"] == 4 and done["finished_at"]
    assert worker.post(f"/v1/training-jobs/{job['id']}/progress", json={"progress": 0.9}).status_code == 409
    assert [j["id"] for j in admin.get("/v1/training-jobs", params={"status": "succeeded"}).json()] == [job["id"]]
    assert admin.get("/v1/training-jobs", params={"detector_id": detector["id"], "status": "queued"}).json() == []
    assert admin.get("/v1/training-jobs", params={"status": "bogus"}).status_code == 422
    assert worker.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).status_code == 403


def test_cancel_and_failed_jobs(admin) -> None:
    detector = admin.create_detector()
    worker = admin.new_token("worker")
    first = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).json()
    cancelled = admin.post(f"/v1/training-jobs/{first['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert admin.post(f"/v1/training-jobs/{first['id']}/cancel").status_code == 409
    assert worker.post("/v1/training-jobs/claim").status_code == 204  # a cancelled job is never handed out
    second = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).json()
    worker.post("/v1/training-jobs/claim")
    admin.post(f"/v1/training-jobs/{second['id']}/cancel")
    refused = worker.post(f"/v1/training-jobs/{second['id']}/progress", json={"progress": 0.1})
    assert refused.status_code == 409  # the worker learns to stop
    third = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).json()
    worker.post("/v1/training-jobs/claim")
    failed = worker.post(f"/v1/training-jobs/{third['id']}/complete", json={"error": "out of memory"}).json()
    assert failed["status"] == "failed" and failed["error"] == "out of memory"


def test_a_dead_workers_job_is_retried_then_failed(admin, client, clock) -> None:
    detector = admin.create_detector()
    worker = admin.new_token("worker")
    settings = client.app.state.resources.settings
    settings.__dict__["training_lease_s"] = 0.2
    settings.__dict__["training_max_attempts"] = 2
    job = admin.post(f"/v1/detectors/{detector['id']}/training-jobs", json={}).json()
    assert worker.post("/v1/training-jobs/claim").json()["attempts"] == 1
    clock.advance(0.4)  # the worker died: its lease runs out
    again = worker.post("/v1/training-jobs/claim").json()
    assert again["id"] == job["id"] and again["attempts"] == 2
    clock.advance(0.4)
    assert worker.post("/v1/training-jobs/claim").status_code == 204
    final = admin.get(f"/v1/training-jobs/{job['id']}").json()
    assert final["status"] == "failed" and "no attempts are left" in final["error"]


def test_workers_never_share_a_job(admin) -> None:
    worker = admin.new_token("worker")
    ids = {
        admin.post(f"/v1/detectors/{admin.create_detector()['id']}/training-jobs", json={}).json()["id"]
        for _ in range(5)
    }
    got: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        for _ in range(3):
            response = worker.post("/v1/training-jobs/claim")
            if response.status_code == 200:
                with lock:
                    got.append(response.json()["id"])

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(ids)


def test_every_n_labels_queues_a_retrain(admin, jpeg) -> None:
    detector = admin.create_detector()
    admin.post(f"/v1/detectors/{detector['id']}/settings", json={"retrain_every_n_labels": 2})
    for label in ("YES", "NO", "YES", "NO"):
        iq = admin.submit(detector["id"], jpeg()).json()
        admin.post("/v1/labels", json={"label": label, "image_query_id": iq["id"]})
    jobs = admin.get("/v1/training-jobs", params={"detector_id": detector["id"]}).json()
    assert len(jobs) == 1 and jobs[0]["trigger"] == "labels"  # one open job at a time
    dataset = admin.get(f"/v1/detectors/{detector['id']}/dataset").json()
    assert [d["label"] for d in dataset] == ["YES", "NO", "YES", "NO"]
