"""The whole IntelliOptics loop as real processes, for the end-to-end test and its benches.

cloud API · retraining worker · inference · edge API · nginx gateway, on free ports,
with the cloud's data in a directory that survives its restarts. A person's part
(labelling through the review API, starting a training job) is done with
:class:`~tests.support.cloud_stack.CloudAdmin`; a camera's part with the ``groundlight``
SDK pointed at the edge gateway.

Benches (not run by ``make test``; each prints and returns its numbers)::

    .venv/bin/python -c "from tests.e2e.loop import run_loop_bench; run_loop_bench()"
    .venv/bin/python -c "from tests.e2e.loop import run_curve_bench; run_curve_bench()"
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from groundlight import Groundlight

from intellioptics_training.synthetic import encode_png, generate
from tests.support.cloud_stack import CLOUD_BOOTSTRAP_TOKEN, CloudAdmin, CloudProcess, cloud_process, worker_process
from tests.support.edge_stack import EdgeStack, edge_stack
from tests.support.procs import REPO_ROOT, ManagedProcess, running

DEV_SEED = 1001  # the held-out "new images" of the loop and the curve's evaluation set
OOD_SEED = 2002


@dataclass(frozen=True)
class Example:
    image: bytes
    label: str  # YES (defect) / NO (clean) / OOD


def binary_examples(per_class: int, seed: int, strength: float = 1.0) -> list[Example]:
    """The training library's hard development set: subtle defects on textured surfaces
    (``strength`` > 1 makes the defects plainer)."""
    return [Example(encode_png(g.rgb), g.label) for g in generate("binary", per_class, seed, strength)]


def ood_examples(count: int, seed: int = OOD_SEED) -> list[Example]:
    return [Example(encode_png(g.rgb), g.label) for g in generate("ood", count, seed)]


@dataclass
class Loop:
    cloud: CloudProcess
    admin: CloudAdmin
    reviewer_token: str
    worker: ManagedProcess
    edge: EdgeStack
    gl: Groundlight
    refresh_rate: float

    # --- a person's part ------------------------------------------------------------

    def create_detector(self, name: str, confidence_threshold: float) -> str:
        """Through the gateway (nginx falls back to the cloud), then configured on the edge."""
        detector = self.gl.create_detector(
            name=name, query="Is there a defect on the surface?", confidence_threshold=confidence_threshold
        )
        # Jobs only when the test asks (null: no automatic jobs): they would start mid-labelling.
        settings = self.admin.request(
            "POST",
            f"/v1/detectors/{detector.id}/settings",
            json={"retrain_every_n_labels": None, "promotion_policy": "auto"},
        )
        assert settings.status_code == 200, settings.text
        config = {
            "global_config": {"refresh_rate": self.refresh_rate, "confident_audit_rate": 0.0},
            "detectors": [{"detector_id": detector.id, "edge_inference_config": "default"}],
        }
        response = httpx.put(
            f"{self.edge.gateway_url}/edge-config", json=config, headers={"x-api-token": CLOUD_BOOTSTRAP_TOKEN}
        )
        assert response.status_code == 200, response.text
        return detector.id

    def label_pending(self, detector_id: str, truth: dict[str, str]) -> float:
        """Label every pending review item with its true label; returns when the last was given."""
        labelled = self.admin.review(detector_id, lambda item: truth[item["image_query_id"]], token=self.reviewer_token)
        assert labelled, "nothing was waiting for review"
        return time.monotonic()

    def train(self, detector_id: str, trainer: str = "fast", timeout: float = 600.0) -> dict[str, Any]:
        """Start a training job and wait for it; returns the version that job registered,
        active or candidate, with the promotion policy's ``decision`` and its reason."""
        response = self.admin.request("POST", f"/v1/detectors/{detector_id}/training-jobs", json={"trainer": trainer})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        def finished() -> dict[str, Any] | None:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.worker.tail()}")
            job = self.admin.request("GET", f"/v1/training-jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = self.admin.wait(finished, timeout, f"training job {job_id}", interval=0.5)
        assert job["status"] == "succeeded", f"training job {job['status']}: {job.get('error')}\n{self.worker.tail()}"
        assert job["model_version"] is not None, f"training job {job_id} succeeded without a version: {job}"
        return self.model_version(detector_id, job["model_version"])

    def model_version(self, detector_id: str, version: int) -> dict[str, Any]:
        return self._one_version(detector_id, lambda v: v["version"] == version, f"version {version}")

    def active_model(self, detector_id: str) -> dict[str, Any]:
        return self._one_version(detector_id, lambda v: v["status"] == "active", "active version")

    def _one_version(self, detector_id: str, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        versions = self.admin.request("GET", f"/v1/detectors/{detector_id}/models").json()
        found = [v for v in versions if wanted(v)]
        assert found, f"no {what}: {json.dumps(versions)[:2000]}"
        return found[0]

    # --- the edge's part --------------------------------------------------------------

    def wait_edge_serving(self, detector_id: str, model_version_id: str, timeout: float) -> float:
        """Until the inference service serves the cloud's active version; returns when."""
        expected = f"{model_version_id}-primary"

        def serving() -> bool:
            # Asking for readiness also loads the detector when it is not loaded yet.
            httpx.get(f"{self.edge.inference_url}/detectors/{detector_id}/ready", timeout=30)
            listing = httpx.get(f"{self.edge.inference_url}/detectors", timeout=10).json()
            for entry in listing["detectors"]:
                loaded = entry.get("loaded") or {}
                if entry["detector_id"] == detector_id and loaded.get("primary_model_id") == expected:
                    return True
            return False

        self.admin.wait(serving, timeout, f"edge serving {expected}", interval=0.2)
        return time.monotonic()

    def submit(self, detector_id: str, image: bytes, *, human_review: str | None = None) -> Any:
        return self.gl.submit_image_query(detector_id, image, wait=0, human_review=human_review)

    def submit_for_labelling(self, detector_id: str, examples: Sequence[Example]) -> dict[str, str]:
        """human_review=ALWAYS: the edge hands them to the cloud's review queue even when
        its model could answer. Returns {image_query_id: true label}."""
        return {self.submit(detector_id, e.image, human_review="ALWAYS").id: e.label for e in examples}

    def edge_status(self) -> dict[str, Any]:
        return httpx.get(f"{self.edge.edge_api_url}/status.json", timeout=10).json()


@contextlib.contextmanager
def loop_stack(base_dir: Path, *, refresh_rate: float = 2.0) -> Iterator[Loop]:
    log_dir = base_dir / "logs"
    cloud = cloud_process(base_dir / "cloud-data", log_dir)
    cloud.start()
    try:
        admin = CloudAdmin(cloud.url)
        device_token = admin.create_token("loop-edge", "device")
        reviewer_token = admin.create_token("loop-reviewer", "reviewer")
        worker_token = admin.create_token("loop-worker", "worker")
        worker = worker_process(
            cloud.url,
            worker_token,
            log_dir,
            base_dir / "worker",
            INTELLIOPTICS_DATA_DIR=str(REPO_ROOT / "data"),
            INTELLIOPTICS_HEARTBEAT_S="2",
        )
        edge_env = {
            "INTELLIOPTICS_DEVICE_TOKEN": device_token,
            "INTELLIOPTICS_MODELS_DIR": str(base_dir / "models"),
            "INTELLIOPTICS_OUTBOX_POLL_INTERVAL_S": "0.2",
            "INTELLIOPTICS_OUTBOX_BACKOFF_BASE_S": "0.2",
            "INTELLIOPTICS_OUTBOX_BACKOFF_CAP_S": "1",
            "INTELLIOPTICS_HEARTBEAT_INTERVAL_S": "2",
            "INTELLIOPTICS_METRICS_REPORT_INTERVAL_S": "5",
            "INTELLIOPTICS_EDGE_NAME": "loop-edge",
        }
        config = {"global_config": {"refresh_rate": refresh_rate, "confident_audit_rate": 0.0}, "detectors": []}
        with (
            running(worker),
            edge_stack(
                base_dir, config, cloud_url=cloud.url, extra_env=edge_env, models_dir=base_dir / "models"
            ) as edge,
        ):
            gl = Groundlight(endpoint=edge.gateway_url, api_token=CLOUD_BOOTSTRAP_TOKEN)
            yield Loop(cloud, admin, reviewer_token, worker, edge, gl, refresh_rate)
    finally:
        cloud.stop()


# --- benches -------------------------------------------------------------------------


def _label_examples(loop: Loop, detector_id: str, examples: Sequence[Example]) -> float:
    return loop.label_pending(detector_id, loop.submit_for_labelling(detector_id, examples))


def run_loop_bench(
    base_dir: Path | None = None, *, per_class: int = 50, refresh_rate: float = 10.0, trainer: str = "fast"
) -> dict[str, float]:
    """Time from the Nth label to the edge serving the new version (issue 5's quality bar:
    a 100-image detector, the fast trainer, refresh_rate 10 s, target < 90 s)."""
    with contextlib.ExitStack() as stack:
        base = base_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="io-loop-bench-")))
        loop = stack.enter_context(loop_stack(base, refresh_rate=refresh_rate))
        detector_id = loop.create_detector("loop-bench", confidence_threshold=0.75)
        last_label = _label_examples(loop, detector_id, binary_examples(per_class, seed=1))
        model = loop.train(detector_id, trainer)
        assert model["status"] == "active", f"the first version was not promoted: {model['decision']}"
        trained = time.monotonic()
        served = loop.wait_edge_serving(detector_id, model["id"], timeout=refresh_rate * 3 + 60)
        result = {
            "images": 2 * per_class,
            "refresh_rate_s": refresh_rate,
            "label_to_trained_s": round(trained - last_label, 1),
            "trained_to_edge_s": round(served - trained, 1),
            "label_to_edge_serving_s": round(served - last_label, 1),
        }
        print(json.dumps(result))
        return result


def evaluate_on_edge(loop: Loop, detector_id: str, dev: Sequence[Example], threshold: float) -> dict[str, float]:
    """Answer rate (confident at the edge) and accuracy on the dev set, through the gateway."""
    answered = correct_answered = correct_all = 0
    for example in dev:
        iq = loop.submit(detector_id, example.image)
        label = getattr(iq.result.label, "value", iq.result.label)
        confident = bool(iq.result.from_edge) and (iq.result.confidence or 0.0) >= threshold
        correct = label == example.label
        answered += confident
        correct_answered += confident and correct
        correct_all += correct
    return {
        "edge_answer_rate": round(answered / len(dev), 3),
        "accuracy_of_edge_answers": round(correct_answered / answered, 3) if answered else float("nan"),
        "accuracy_all": round(correct_all / len(dev), 3),
    }


def run_curve_bench(
    base_dir: Path | None = None,
    *,
    steps: Sequence[int] = (10, 25, 50, 100),
    dev_per_class: int = 50,
    threshold: float = 0.75,
    trainer: str = "fast",
) -> list[dict[str, Any]]:
    """Edge answer rate and accuracy as labels accumulate (per class), on the hard dev set.

    Each step's row names the version its job registered and the promotion policy's
    decision; when the policy kept it a candidate, the edge still serves the active
    version, and the row says which one was measured.

    The dev images' own escalations go to the review queue too; they are left unlabelled
    (skipped by the next round's labelling, which labels only the training images)."""
    results = []
    with contextlib.ExitStack() as stack:
        base = base_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="io-curve-bench-")))
        loop = stack.enter_context(loop_stack(base, refresh_rate=2.0))
        detector_id = loop.create_detector("loop-curve", confidence_threshold=threshold)
        dev = binary_examples(dev_per_class, seed=DEV_SEED)
        pool = binary_examples(max(steps), seed=1)  # YES/NO interleaved: a prefix is balanced
        labelled = 0
        for per_class in steps:
            new = pool[2 * labelled : 2 * per_class]
            truth = loop.submit_for_labelling(detector_id, new)
            loop.admin.review(
                detector_id,
                lambda item, truth=truth: truth.get(item["image_query_id"], "UNCLEAR"),
                token=loop.reviewer_token,
            )
            labelled = per_class
            started = time.monotonic()
            model = loop.train(detector_id, trainer)
            served = model if model["status"] == "active" else loop.active_model(detector_id)
            loop.wait_edge_serving(detector_id, served["id"], timeout=120)
            decision = model["decision"] or {}
            row = {
                "labels_per_class": per_class,
                "model_version": model["version"],
                "promotion": decision.get("action"),
                "promotion_reason": decision.get("reason"),
                "edge_serving_version": served["version"],
                "train_and_rollout_s": round(time.monotonic() - started, 1),
                **evaluate_on_edge(loop, detector_id, dev, threshold),
            }
            print(json.dumps(row))
            results.append(row)
    return results
