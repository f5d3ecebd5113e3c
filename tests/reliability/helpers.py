"""Shared pieces of the reliability suite: a real cloud API process, images, model uploads.

Kept as a plain module (not conftest) so the soak suite can import the same launchers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.support.edge_stack import brightness_model
from tests.support.procs import ManagedProcess, free_port, python_module, running, wait_http

SECRET_KEY = "reliability-secret-key-0123456789"


@dataclass(frozen=True)
class CloudServer:
    url: str
    token: str
    database_url: str
    log_path: Path
    data_dir: Path
    process: ManagedProcess

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-token": token or self.token}, timeout=timeout)


def cloud_env(base_dir: Path, port: int, token: str, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        "INTELLIOPTICS_DATA_DIR": str(base_dir / "data"),
        "INTELLIOPTICS_BOOTSTRAP_TOKEN": token,
        "INTELLIOPTICS_CLOUD_PORT": str(port),
        "INTELLIOPTICS_SECRET_KEY": SECRET_KEY,
        "INTELLIOPTICS_ENVIRONMENT": "test",
        # INFO, so that the log-grep for raw tokens has every request line to look at.
        "INTELLIOPTICS_LOG_LEVEL": "INFO",
    }
    if database_url:
        env["INTELLIOPTICS_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@contextlib.contextmanager
def cloud_server(base_dir: Path, database_url: str | None = None, **extra: str) -> Iterator[CloudServer]:
    """``python -m intellioptics_cloud`` on a free port (SQLite under ``base_dir`` by default)."""
    port = free_port()
    token = "io_reliabilitytest00_" + uuid.uuid4().hex
    env = cloud_env(base_dir, port, token, database_url, **extra)
    process = python_module(f"cloud-{port}", "intellioptics_cloud", base_dir / "logs", env)
    with running(process):
        wait_http(f"http://127.0.0.1:{port}/health/live", timeout=90, process=process)
        yield CloudServer(
            url=f"http://127.0.0.1:{port}",
            token=token,
            database_url=database_url or f"sqlite:///{base_dir / 'data' / 'cloud' / 'cloud.db'}",
            log_path=process.log_path,
            data_dir=base_dir / "data",
            process=process,
        )


@contextlib.contextmanager
def cloud_with_device(base_dir: Path, detector_name: str) -> Iterator[tuple[CloudServer, str, str]]:
    """A cloud with one binary detector and a device token for an edge: (server, detector id,
    device token). The failed-token limiter is off: fault tests hammer it on purpose."""
    with cloud_server(base_dir, INTELLIOPTICS_AUTH_MAX_FAILURES="0") as server, server.client() as admin:
        detector = admin.post("/v1/detectors", json={"name": detector_name, "query": "bright?"}).json()
        device = admin.post("/v1/tokens", json={"name": "edge", "role": "device"}).json()["token"]
        yield server, detector["id"], device


def cloud_image_query_ids(cloud: CloudServer, detector_id: str) -> list[str]:
    """Every image-query id the cloud holds for the detector, duplicates kept, all pages."""
    ids: list[str] = []
    with cloud.client() as admin:
        page = 1
        while True:
            params = {"detector_id": detector_id, "page": page, "page_size": 1000}
            body = admin.get("/v1/image-queries", params=params).json()
            ids += [r["id"] for r in body["results"]]
            if not body.get("next"):
                return ids
            page += 1


def jpeg(value: int = 200, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def upload_brightness_model(client: httpx.Client, detector_id: str, activate: bool = True) -> httpx.Response:
    manifest = {
        "primary_pipeline_config": {
            "kind": "primary",
            "mode": "BINARY",
            "class_names": ["NO", "YES"],
            "input": {"height": 32, "width": 32},
        },
        "metrics": {"balanced_accuracy": 0.9},
        "training_set_size": 2,
        "class_counts": {"NO": 1, "YES": 1},
        "trainer": "test",
        "activate": activate,
    }
    files = {"primary": ("model.buf", brightness_model(("NO", "YES")), "application/octet-stream")}
    return client.post(f"/v1/detectors/{detector_id}/models", files=files, data={"manifest": json.dumps(manifest)})


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn runs in the same process)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class EdgeProcesses:
    """The edge's three processes with handles, so faults can kill and restart them."""

    inference: ManagedProcess
    edge_api: ManagedProcess
    gateway: ManagedProcess
    gateway_url: str
    edge_api_url: str
    inference_url: str
    token: str
    models_dir: Path
    data_dir: Path

    def restart(self, process: ManagedProcess, health_url: str) -> float:
        """Start a killed process again; returns the seconds until it answered its probe."""
        import time

        started = time.monotonic()
        process.start()
        wait_http(health_url, timeout=90, process=process)
        return time.monotonic() - started


@contextlib.contextmanager
def edge_processes(
    base_dir: Path,
    detectors: list[str],
    *,
    preset: str = "no_cloud",
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    cloud_url: str = "",
    device_token: str | None = None,
    audit_rate: float = 0.0,
    gateway_to_cloud: bool = False,
) -> Iterator[EdgeProcesses]:
    """Inference + edge API + nginx on free ports, a brightness model per detector.

    nginx runs offline unless ``gateway_to_cloud``: then what the edge API answers 404 to
    (a query the cloud answered, say) is forwarded to ``cloud_url``, as in production.
    """
    import yaml

    from tests.support.edge_stack import EDGE_TOKEN, install_brightness_model, load_nginx_renderer
    from tests.support.procs import nginx_process

    models_dir = base_dir / "models"
    data_dir = data_dir or base_dir / "edge-data"
    for detector_id in detectors:
        install_brightness_model(models_dir, detector_id)
    config = {
        "global_config": {"confident_audit_rate": audit_rate},
        "detectors": [
            {"detector_id": d, "edge_inference_config": preset, "name": d, "query": "bright?"} for d in detectors
        ],
    }
    config_path = base_dir / "edge-config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    ports = {"inference": free_port(), "edge": free_port(), "gateway": free_port()}
    common = {"INTELLIOPTICS_ENVIRONMENT": "test", "INTELLIOPTICS_LOG_LEVEL": "WARNING", **(extra_env or {})}
    log_dir = base_dir / "logs"
    inference = python_module(
        "inference",
        "intellioptics_inference",
        log_dir,
        {
            **common,
            "INTELLIOPTICS_MODELS_DIR": str(models_dir),
            "INTELLIOPTICS_INFERENCE_PORT": str(ports["inference"]),
        },
    )
    edge_api = python_module(
        "edge-api",
        "intellioptics_edge",
        log_dir,
        {
            **common,
            "INTELLIOPTICS_EDGE_API_HOST": "127.0.0.1",
            "INTELLIOPTICS_EDGE_API_PORT": str(ports["edge"]),
            "INTELLIOPTICS_INFERENCE_URL": f"http://127.0.0.1:{ports['inference']}",
            "INTELLIOPTICS_CLOUD_URL": cloud_url,
            **({"INTELLIOPTICS_DEVICE_TOKEN": device_token} if device_token else {}),
            "INTELLIOPTICS_EDGE_DATA_DIR": str(data_dir),
            "INTELLIOPTICS_EDGE_CONFIG": str(config_path),
            "INTELLIOPTICS_EDGE_TOKENS": EDGE_TOKEN,
            "INTELLIOPTICS_MODELS_DIR": str(models_dir),
        },
    )
    prefix = base_dir / "nginx"
    conf = load_nginx_renderer().render(
        prefix,
        port=ports["gateway"],
        edge_api=f"127.0.0.1:{ports['edge']}",
        cloud_url=cloud_url if gateway_to_cloud else "",
        access_log="off",
    )
    gateway = nginx_process(conf, prefix)
    with running(inference), running(edge_api), running(gateway):
        stack = EdgeProcesses(
            inference=inference,
            edge_api=edge_api,
            gateway=gateway,
            gateway_url=f"http://127.0.0.1:{ports['gateway']}",
            edge_api_url=f"http://127.0.0.1:{ports['edge']}",
            inference_url=f"http://127.0.0.1:{ports['inference']}",
            token=EDGE_TOKEN,
            models_dir=models_dir,
            data_dir=data_dir,
        )
        wait_http(f"{stack.inference_url}/health/live", timeout=60, process=inference)
        wait_http(f"{stack.edge_api_url}/health/live", timeout=60, process=edge_api)
        wait_http(f"{stack.gateway_url}/health/live", timeout=30, process=gateway)
        for detector_id in detectors:
            wait_http(f"{stack.inference_url}/detectors/{detector_id}/ready", timeout=60, process=inference)
        yield stack
