"""The real stack the browser tests and the labeling bench run against.

Builds the web UI when its sources changed (``npm ci`` only when node_modules is missing
or older than the lock file), starts the real cloud API process on a free port with a
temporary SQLite database and blob directory serving the built ``dist/``, and seeds it
through its public API: tokens, a detector with images in the review queue (sent with
the real groundlight SDK), an edge with hourly counters.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.procs import free_port, python_module, running, wait_http

FRONTEND = Path(__file__).resolve().parents[1]
DIST = FRONTEND / "dist"
BROWSER_SCRIPT = FRONTEND / "tests" / "browser.mjs"
CHROMIUM = Path(os.environ.get("INTELLIOPTICS_CHROMIUM", "/usr/bin/chromium"))
BOOTSTRAP_TOKEN = "io_frontendtestbootstrap0000000000000000"
SOURCE_GLOBS = ("src/**/*", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json")


def require_tools(*tools: str) -> None:
    """Skip when a tool (``npm``, ``node``, ``chromium``) is missing on a developer's machine;
    fail in CI (``CI`` set, as every CI service does), where a skip would let a machine
    without them pass without ever testing the web UI."""
    missing = [tool for tool in tools if not _tool_present(tool)]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: run `make system-deps` (see docs/web-ui.md)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message}; CI is set, so the web UI tests fail instead of skipping", pytrace=False)
    pytest.skip(message)


def _tool_present(tool: str) -> bool:
    if tool == "chromium":
        return CHROMIUM.exists()
    return shutil.which(tool) is not None


def _newest(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: install Node 20 and npm (see docs/web-ui.md)")
    return npm


def ensure_installed() -> None:
    """``npm ci`` when node_modules is missing or older than package-lock.json."""
    installed = FRONTEND / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (FRONTEND / "package-lock.json").stat().st_mtime:
        subprocess.run([_npm(), "ci", "--no-audit", "--no-fund"], cwd=FRONTEND, check=True, timeout=600)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One install or build at a time on this machine: two test runs share node_modules and dist/."""
    with open(Path(tempfile.gettempdir()) / "intellioptics-frontend-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built() -> None:
    """``npm ci`` and ``npm run build`` when needed; a no-op when dist/ is current."""
    npm = _npm()
    with _build_lock():
        ensure_installed()
        sources = [p for pattern in SOURCE_GLOBS for p in FRONTEND.glob(pattern)]
        index = DIST / "index.html"
        if not index.exists() or index.stat().st_mtime < _newest(sources):
            subprocess.run([npm, "run", "build"], cwd=FRONTEND, check=True, timeout=600)


@dataclass(frozen=True)
class Cloud:
    base_url: str
    admin_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"x-api-token": token or self.admin_token}, timeout=30)


@contextlib.contextmanager
def cloud_api(work_dir: Path) -> Iterator[Cloud]:
    """The real cloud API process (``python -m intellioptics_cloud``) serving the built UI."""
    port = free_port()
    data = work_dir / "cloud-data"
    data.mkdir(parents=True, exist_ok=True)
    env = {
        "INTELLIOPTICS_CLOUD_PORT": str(port),
        "INTELLIOPTICS_CLOUD_HOST": "127.0.0.1",
        "INTELLIOPTICS_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        "INTELLIOPTICS_DATA_DIR": str(data),
        "INTELLIOPTICS_DATABASE_URL": f"sqlite:///{data / 'cloud.db'}",
        "INTELLIOPTICS_BLOB_DIR": str(data / "blobs"),
        "INTELLIOPTICS_WEB_DIR": str(DIST),
        "INTELLIOPTICS_LOG_LEVEL": "WARNING",
    }
    process = python_module("cloud-api", "intellioptics_cloud", work_dir / "logs", env)
    with running(process):
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health/live", timeout=60, process=process)
        yield Cloud(base, BOOTSTRAP_TOKEN)


def image_bytes(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A distinct JPEG per seed: a gradient with a bright square where the seed puts it."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(gradient, (height, width, 3)).copy()
    pixels += rng.normal(0, 12, pixels.shape)
    x, y = int(rng.integers(0, width - 120)), int(rng.integers(0, height - 120))
    pixels[y : y + 120, x : x + 120] = (230, 60 + seed % 150, 40)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@dataclass(frozen=True)
class Seeded:
    detector_id: str
    image_query_ids: list[str]
    reviewer_token: str
    worker_token: str
    device_token: str
    edge_id: str | None


def make_token(cloud: Cloud, name: str, role: str) -> str:
    with cloud.client() as client:
        response = client.post("/v1/tokens", json={"name": name, "role": role})
        response.raise_for_status()
        return str(response.json()["token"])


def submit_images(
    cloud: Cloud, detector_name: str, query: str, count: int, token: str | None = None
) -> tuple[str, list[str]]:
    """Create (or get) a binary detector and send ``count`` images with the real groundlight SDK.

    With no model yet, every image query is escalated to the review queue.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK's own deprecation warnings are not ours to fix
        from groundlight import Groundlight

        gl = Groundlight(endpoint=cloud.base_url, api_token=token or cloud.admin_token)
        detector = gl.get_or_create_detector(name=detector_name, query=query, confidence_threshold=0.9)
        ids = [gl.submit_image_query(detector, image_bytes(seed), wait=0).id for seed in range(count)]
    return detector.id, ids


def seed_edge(cloud: Cloud, device_token: str, detector_id: str) -> str:
    """Register an edge, heartbeat with its versions and rates, report 6 hours of counters."""
    with cloud.client(device_token) as client:
        edge = client.post(
            "/v1/edges/register",
            json={"name": "line-1-edge", "software_version": "0.1.0", "detector_ids": [detector_id]},
        )
        edge.raise_for_status()
        edge_id = str(edge.json()["id"])
        client.post(
            f"/v1/edges/{edge_id}/heartbeat",
            json={
                "software_version": "0.1.0",
                "detectors": [{"detector_id": detector_id, "primary_version": 1, "oodd_version": 1}],
                "counters": {"query_rate": 12.5, "escalation_rate": 0.18},
            },
        ).raise_for_status()
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        entries = [
            {
                "detector_id": detector_id,
                "hour": (now - timedelta(hours=h)).isoformat(),
                "counters": {
                    "queries": 600 - 40 * h,
                    "edge_answers": 480 - 50 * h,
                    "escalations": 120 + 10 * h,
                    "audits": 6,
                    # An internal counter (the edge's confidence histogram): never in a legend.
                    "confidence_bin_5": 3,
                },
            }
            for h in range(6)
        ]
        client.post("/v1/edge/report-metrics", json={"edge_id": edge_id, "entries": entries}).raise_for_status()
    return edge_id


def seed_edge_answers(cloud: Cloud, device_token: str, detector_id: str, pairs: list[tuple[str, str]]) -> list[str]:
    """Escalations that carry the edge's own answer, each then labeled by a person:
    (edge label, human label) pairs, for the edge-learning accuracy."""
    ids = []
    for seed, (edge_label, human_label) in enumerate(pairs, start=100):
        metadata = {"edge_result": {"label": edge_label, "confidence": 0.62}, "escalation_reason": "audit"}
        with cloud.client(device_token) as client:
            response = client.post(
                "/v1/image-queries",
                params={
                    "detector_id": detector_id,
                    "metadata": base64.urlsafe_b64encode(json.dumps(metadata).encode()).decode(),
                },
                content=image_bytes(seed),
                headers={"content-type": "image/jpeg"},
            )
            response.raise_for_status()
        iq_id = str(response.json()["id"])
        with cloud.client() as client:
            client.post("/v1/labels", json={"image_query_id": iq_id, "label": human_label}).raise_for_status()
        ids.append(iq_id)
    return ids


def run_browser(scenario: str, config: dict, out_dir: Path, timeout: float = 240) -> dict:
    """Run ``browser.mjs`` and return its result.json (raises with its output on failure)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{scenario}-config.json"
    config_path.write_text(json.dumps({"outDir": str(out_dir), "chromium": str(CHROMIUM), **config}))
    completed = subprocess.run(
        [node, str(BROWSER_SCRIPT), scenario, str(config_path)],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result_path = out_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if completed.returncode != 0:
        raise AssertionError(
            f"browser scenario {scenario} failed (rc {completed.returncode}):\n{completed.stderr[-4000:]}\n"
            f"console: {result.get('console')}"
        )
    return result


def tiny_onnx(num_classes: int = 2, seed: int = 0) -> bytes:
    """A real, loadable classifier graph: mean colour per channel -> linear -> softmax.

    Stands in for a trained model where the test needs a model version to exist; the UI
    only shows its metrics, and the cloud checks that onnxruntime can load it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 1, (3, num_classes)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, num_classes])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def model_manifest(class_names: list[str], metrics: dict[str, float], training_set_size: int, **extra: object) -> dict:
    return {
        "primary_pipeline_config": {
            "kind": "primary",
            "mode": "BINARY" if class_names == ["NO", "YES"] else "MULTI_CLASS",
            "class_names": class_names,
        },
        "metrics": metrics,
        "training_set_size": training_set_size,
        "class_counts": {name: training_set_size // len(class_names) for name in class_names},
        "trainer": "fast",
        **extra,
    }


def upload_model(cloud: Cloud, detector_id: str, manifest: dict, seed: int = 0) -> dict:
    with cloud.client() as client:
        response = client.post(
            f"/v1/detectors/{detector_id}/models",
            files={"primary": ("model.buf", tiny_onnx(len(manifest["primary_pipeline_config"]["class_names"]), seed))},
            data={"manifest": json.dumps(manifest)},
        )
        response.raise_for_status()
        return dict(response.json())


def upload_anomaly_model(cloud: Cloud, detector_id: str, work_dir: Path) -> dict:
    """Train a real anomaly model (the training library's PatchCore on eight good synthetic
    metal surfaces, a few seconds on a CPU) and upload it to the detector, active."""
    # Imported here: torch is slow to import, and only this helper of the stack needs it.
    import yaml

    from intellioptics_training.anomaly import AnomalyOptions, export_anomaly_package, train_anomaly
    from intellioptics_training.backbone import DEFAULT_INPUT
    from intellioptics_training.data import Sample, prepare_good
    from intellioptics_training.features import BackboneRunner
    from intellioptics_training.synthetic import generate_anomaly

    good = [image.rgb for image in generate_anomaly("metal", 8, 0, seed=51, strength=4.0)]
    trained = train_anomaly(
        prepare_good([Sample(rgb, "NO") for rgb in good], DEFAULT_INPUT),
        AnomalyOptions(max_bank_patches=512, folds=4),
        runner=BackboneRunner(threads=2),
    )
    paths = export_anomaly_package(work_dir / "anomaly-models", detector_id, trained)
    manifest = {
        "primary_pipeline_config": yaml.safe_load((paths["primary"] / "pipeline_config.yaml").read_text()),
        "oodd_pipeline_config": yaml.safe_load((paths["oodd"] / "pipeline_config.yaml").read_text()),
        "metrics": {},
        "training_set_size": len(good),
        "class_counts": {"NO": len(good)},
        "trainer": "anomaly-patchcore",
        "activate": True,
    }
    files = {part: ("model.buf", (paths[part] / "model.buf").read_bytes()) for part in ("primary", "oodd")}
    with cloud.client() as client:
        response = client.post(
            f"/v1/detectors/{detector_id}/models", files=files, data={"manifest": json.dumps(manifest)}
        )
        response.raise_for_status()
        return dict(response.json())
