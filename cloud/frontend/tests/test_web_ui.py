"""End-to-end: the built web UI in headless Chromium against the real cloud API process.

One browser run (tests/browser.mjs, scenario ``e2e``) signs in, labels five queued items
with the keyboard, undoes and relabels one, skips one, creates a detector, starts a
training job and watches it progress while this test's token plays the training worker
through the cloud's worker endpoints, cancels a second job while it runs, activates a
version and rolls it back, switches the new detector OFF, and visits every page, saving screenshots under
``test-output/screenshots/``. The checks below then read the results back through the
API: the labels must have reached the image queries.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud.frontend.tests.stack import (
    FRONTEND,
    cloud_api,
    ensure_built,
    make_token,
    model_manifest,
    require_tools,
    run_browser,
    seed_edge,
    seed_edge_answers,
    submit_images,
    tiny_onnx,
    upload_model,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.slow,
]

OUTPUT = FRONTEND / "test-output"
QUEUED = 9


@pytest.fixture(scope="module")
def built() -> None:
    # npm builds dist/, node runs tests/browser.mjs, which drives Chromium.
    require_tools("npm", "node", "chromium")
    ensure_built()


def test_reviewer_and_admin_journeys(built: None, tmp_path: Path) -> None:
    with cloud_api(tmp_path) as cloud:
        reviewer = make_token(cloud, "reviewer-e2e", "reviewer")
        worker = make_token(cloud, "worker-e2e", "worker")
        device = make_token(cloud, "edge-e2e", "device")
        detector_id, iq_ids = submit_images(cloud, "e2e-weld", "Is there a crack on the weld?", QUEUED)
        edge_id = seed_edge(cloud, device, detector_id)
        # Two earlier versions, so the models page has something to compare.
        binary = ["NO", "YES"]
        metrics_v1 = {
            "accuracy": 0.71,
            "balanced_accuracy": 0.69,
            "confident_coverage": 0.35,
            "confident_accuracy": 0.93,
        }
        # The nested fields the retraining worker writes: the compare table must render them all.
        metrics_v2 = {
            "accuracy": 0.84,
            "balanced_accuracy": 0.83,
            "confident_coverage": 0.58,
            "confident_accuracy": 0.95,
            "per_class_recall": {"NO": 0.86, "YES": 0.8},
            "support": {"NO": 30, "YES": 30},
            "evaluation": {"method": "cv", "folds": 3, "image_query_ids": [f"iq_{i}" for i in range(12)]},
            "comparison": {"active_version": 1, "new": {"accuracy": 0.84}, "active": {"accuracy": 0.71}},
            "promotion": {"action": "CANDIDATE", "reason": "promotion policy is manual"},
            "skipped_labels": {"UNCLEAR": 2},
        }
        upload_model(cloud, detector_id, model_manifest(binary, metrics_v1, 20, activate=True), seed=1)
        upload_model(cloud, detector_id, model_manifest(binary, metrics_v2, 60), seed=2)
        worker_model = tmp_path / "worker-model.buf"
        worker_model.write_bytes(tiny_onnx(2, seed=3))
        metrics_v3 = {"accuracy": 0.9, "balanced_accuracy": 0.9, "confident_coverage": 0.7, "confident_accuracy": 0.97}
        # Audited edge answers a person labeled (3 of 4 agree), for the edge-learning chart;
        # automatic retraining off, so the worker below claims only the jobs the UI starts.
        with cloud.client() as api:
            api.post(f"/v1/detectors/{detector_id}/settings", json={"retrain_every_n_labels": None}).raise_for_status()
        seed_edge_answers(cloud, device, detector_id, [("YES", "YES"), ("NO", "NO"), ("YES", "NO"), ("NO", "NO")])
        with cloud.client() as api:
            assert api.get("/v1/review/queue", params={"detector_id": detector_id}).json()["count"] == QUEUED
            learning = api.get(f"/v1/detectors/{detector_id}/stats/edge-learning").json()
            assert learning["bucket"] == "hour" and sum(b["compared"] for b in learning["buckets"]) == 4
            assert sum(b["agreed"] for b in learning["buckets"]) == 3

        shutil.rmtree(OUTPUT / "screenshots", ignore_errors=True)
        result = run_browser(
            "e2e",
            {
                "baseUrl": cloud.base_url,
                "adminToken": cloud.admin_token,
                "reviewerToken": reviewer,
                "workerToken": worker,
                "detectorId": detector_id,
                "edgeId": edge_id,
                "newDetector": {
                    "name": "e2e-paint",
                    "query": "Which paint defect?",
                    "classNames": ["good", "scratch", "dent"],
                },
                "workerModel": {"path": str(worker_model), "manifest": model_manifest(binary, metrics_v3, 80)},
                "compare": [1, 2],
                "remainingAfterLabels": QUEUED - 5,
            },
            OUTPUT,
        )

        # No console error or warning, no failed or outside request, on any page.
        assert result["console"] == []
        assert "refused" in result["badTokenMessage"]
        assert result["reviewerNav"] == ["Review queue", "Detectors"]
        assert result["adminNav"] == ["Review queue", "Detectors", "Edges", "Tokens"]

        labels: dict[str, str] = result["labels"]
        assert len(labels) == 5
        assert set(labels) <= set(iq_ids)
        with cloud.client() as api:
            # Each answer reached its image query, with the label the keyboard gave (the undone
            # one relabeled UNCLEAR), as a human answer.
            for iq_id, label in labels.items():
                iq = api.get(f"/v1/image-queries/{iq_id}").json()
                assert iq["result"]["label"] == label, iq
                assert iq["result"]["source"] in {"HUMAN", "USER", "CLOUD_LABELER"}, iq
            queue = api.get("/v1/review/queue", params={"detector_id": detector_id, "limit": 50}).json()
            waiting = {item["image_query_id"] for item in queue["items"]}
            assert not waiting & set(labels), "labeled items must leave the queue"
            assert queue["count"] == QUEUED - 5
            assert result["skipped"] in waiting, "a skipped item goes back to the queue"
            assert int(result["remainingBefore"]) >= QUEUED - 3
            assert int(result["remainingAfter"]) <= QUEUED - 5

            created = api.get("/v1/detectors", params={"name": "e2e-paint"}).json()["results"]
            assert created and created[0]["mode"] == "MULTI_CLASS"
            assert created[0]["mode_configuration"]["class_names"] == ["good", "scratch", "dent"]
            assert created[0]["confidence_threshold"] == pytest.approx(0.8)
            assert created[0]["status"] == "OFF" == result["detectorOff"]["status"]
            assert api.get(f"/v1/detectors/{detector_id}").json()["confidence_threshold"] == pytest.approx(0.75)

            job = api.get(f"/v1/training-jobs/{result['jobId']}").json()
            assert job["trainer"] == "fast"
            assert [e["epoch"] for e in job["epochs"]] == [1, 2, 3, 4]
            assert job["status"] == "succeeded"
            assert job["model_version"] == result["producedVersion"] == 3
            # The admin actions: a running job cancelled, a version activated, then rolled back.
            assert api.get(f"/v1/training-jobs/{result['cancelledJob']['id']}").json()["status"] == "cancelled"
            activation = result["activation"]
            assert activation["afterActivate"] == activation["target"] != activation["before"]
            assert activation["afterRollback"] == activation["before"]
            assert api.get(f"/v1/detectors/{detector_id}/stats").json()["active_model_version"] == activation["before"]
            models = {m["version"]: m for m in api.get(f"/v1/detectors/{detector_id}/models").json()}
            assert models[activation["before"]]["status"] == "active"
            assert models[activation["target"]]["decision"]["action"] == "rollback"
        assert result["progressSeen"] == [20, 40, 60, 80]
        # The job page names the detector and says what became of the version it produced.
        assert "e2e-weld" in result["jobCrumbs"] and detector_id not in result["jobCrumbs"]
        assert (
            "v3 is not active (candidate)" in result["jobDecision"] and "no decision recorded" in result["jobDecision"]
        )
        # Compare renders every field, nested ones included, never "[object Object]".
        compare = result["compareText"]
        assert "[object Object]" not in compare
        for field in ("per class recall", "support", "evaluation", "comparison", "promotion", "skipped labels"):
            assert field in compare, field
        assert "promotion policy is manual" in compare
        # Activate and roll back ask first, say what changes, and change nothing before the answer.
        assert "replaces v" in result["activateConfirm"] and "roll back" in result["activateConfirm"]
        assert result["activeWhileAsking"] == activation["before"]
        assert "Roll back v" in result["rollbackConfirm"]
        # The edge page charts its one current detector by name, with no internal counters.
        assert [c["title"] for c in result["edgeCharts"]] == ["e2e-weld: per hour"]
        assert result["edgeCharts"][0]["legend"] == ["queries", "edge answers", "escalations", "audits"]
        assert "1 detector: e2e-weld" in result["edgeSummary"]
        # The list fills in the rates from the heartbeat (12.5 queries per second, 18 % escalated).
        assert any("query rate 12.5" in row and "18" in row and "escalated" in row for row in result["edgeRows"])
        # Tokens: copied as shown, off the screen once revoked, and the tab's own token marked and kept.
        tokens = result["tokens"]
        assert tokens["copiedMatches"] and not tokens["stillShown"] and not tokens["revokedListed"]
        assert len(tokens["mine"]) == 1 and tokens["mine"][0]["revocable"] is False
        # At 390 px no page pans sideways, and the review answers are on screen under the image.
        for path, layout in result["phone"].items():
            assert layout["scrollWidth"] <= layout["innerWidth"], (path, layout)
        review = result["phone"]["/review"]
        assert review["imageTop"] < review["answersBottom"] <= 844, review
        # The page timed each wait between items (key press to the next item painted).
        assert len(result["uiWaitsMs"]) >= 6
        assert all(0 < wait < 5000 for wait in result["uiWaitsMs"])

    shots = sorted(p.name for p in (OUTPUT / "screenshots").glob("*.png"))
    for name in (
        "02-review",
        "05-detectors",
        "07-detector",
        "08-models",
        "10-job-running",
        "11-job-done",
        "12-models-compare",
        "12b-job-cancelled",
        "12c-models-rolled-back",
        "06b-detector-off",
        "13-edges",
        "14-edge",
        "phone-review",
        "phone-detectors",
    ):
        assert f"{name}.png" in shots
