"""`make run`: the whole stack as local processes on embedded defaults.

Starts the cloud API (with the web UI), the retraining worker, the edge inference
service, the edge API and the nginx gateway; seeds a demo detector with a trained model
and a few queued reviews; prints URLs, the admin token, a curl line and an SDK snippet.
Ctrl-C stops everything. A service that exits once the stack is up is started again,
after 1 s, then 2, 4 ... up to 30 s while it keeps failing (the wait starts again at 1 s
once it has run for a minute), with a line saying so; the others keep running. A second
run reuses the data directory (database, tokens, models, demo data) and only starts the
processes.

Every setting the services read comes from the same ``INTELLIOPTICS_*`` variables the
compose files use, so ``INTELLIOPTICS_DATABASE_URL=postgresql+psycopg2://…`` or
``INTELLIOPTICS_BLOB_BACKEND=azure`` point this stack at real backends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
DEMO_NAME = "demo-surface-defects"
DEMO_QUERY = "Is there a defect (crack, scratch, stain or pit) on this surface?"
TOKEN_ALPHABET = string.ascii_letters + string.digits
RESTART_BASE_S = 1.0
RESTART_CAP_S = 30.0
STABLE_S = 60.0  # a service up this long has recovered: its next exit waits RESTART_BASE_S again


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def restart_delay(failures: int) -> float:
    """Seconds before restarting a service that has exited ``failures`` times in a row."""
    return min(RESTART_CAP_S, RESTART_BASE_S * 2 ** max(0, failures - 1))


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


@dataclass
class Service:
    """One supervised process: how to start it again, and when."""

    name: str
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    started_at: float
    failures: int = 0  # exits in a row, none after a stable run
    restart_at: float | None = None  # set while it waits to be started again


@dataclass
class Stack:
    data: Path = field(default_factory=lambda: Path(os.environ.get("INTELLIOPTICS_DATA_DIR", REPO / "data")).resolve())
    cloud_port: int = field(default_factory=lambda: _env_int("INTELLIOPTICS_CLOUD_PORT", 8000))
    edge_port: int = field(default_factory=lambda: _env_int("INTELLIOPTICS_EDGE_API_PORT", 8718))
    inference_port: int = field(default_factory=lambda: _env_int("INTELLIOPTICS_INFERENCE_PORT", 8001))
    gateway_port: int = field(default_factory=lambda: _env_int("INTELLIOPTICS_GATEWAY_PORT", 30101))
    streams_port: int = field(default_factory=lambda: _env_int("INTELLIOPTICS_STREAMS_PORT", 8719))
    services: dict[str, Service] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    @property
    def run_dir(self) -> Path:
        return self.data / "run"

    @property
    def models_dir(self) -> Path:
        return self.data / "edge" / "models"

    @property
    def cloud_url(self) -> str:
        return f"http://127.0.0.1:{self.cloud_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    # --- process management -----------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO, start_new_session=True
            )
        service = self.services.get(name)
        if service is None:
            self.services[name] = Service(name, args, env, process, self.clock())
        else:
            service.process, service.started_at, service.restart_at = process, self.clock(), None
        print(f"  started {name:<10} pid {process.pid:<7} log {log_path.relative_to(self.data.parent)}")

    def supervise(self) -> None:
        """One round: schedule the restart of each service that has exited, start those due."""
        now = self.clock()
        for service in list(self.services.values()):
            code = service.process.poll()
            if service.restart_at is None and code is not None:
                _kill_group(service.process)  # what it left behind (nginx workers) holds its port
                service.failures = 1 if now - service.started_at >= STABLE_S else service.failures + 1
                delay = restart_delay(service.failures)
                service.restart_at = now + delay
                print(
                    f"  {service.name} {describe_exit(code)}; restarting it in {delay:.0f} s"
                    f" (see {self.log_path(service.name)})"
                )
            elif service.restart_at is not None and now >= service.restart_at:
                self.start(service.name, service.args, service.env)

    def wait_ready(self, name: str, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        process = self.services[name].process
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with code {process.returncode}; see {self.run_dir}/logs/{name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise SystemExit(
            f"{name} did not become ready at {url} within {timeout:.0f} s; see {self.run_dir}/logs/{name}.log"
        )

    def stop_all(self) -> None:
        # The children run in their own sessions, so nothing else stops them: a second
        # Ctrl-C (or a SIGTERM) during shutdown must not abandon them half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        services = list(reversed(self.services.values()))
        for service in services:
            if service.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGTERM)
        for service in services:
            try:
                service.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(service.process)
            print(f"  stopped {service.name}")

    # --- persistent secrets -----------------------------------------------------

    def secret(self, name: str, env_name: str) -> str:
        """A token from the environment, or one made on the first run and kept in data/run."""
        if os.environ.get(env_name):
            return os.environ[env_name]
        path = self.run_dir / name
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        # The SDK checks that a token's first 20 characters are [A-Za-z0-9_].
        value = "io_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(40))
        path.write_text(value)
        path.chmod(0o600)
        return value


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a service's process group (each service leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# --- seeding ----------------------------------------------------------------------


def seed_demo(stack: Stack, admin_token: str) -> tuple[str, str]:
    """Create the demo detector, its model and a few queued reviews (once). Returns (detector id, device token)."""
    client = httpx.Client(base_url=stack.cloud_url, headers={"x-api-token": admin_token}, timeout=60.0)
    found = client.get("/v1/detectors", params={"name": DEMO_NAME}).raise_for_status().json()
    if found["count"]:
        detector_id = found["results"][0]["id"]
    else:
        detector_id = (
            client.post("/v1/detectors", json={"name": DEMO_NAME, "query": DEMO_QUERY, "confidence_threshold": 0.9})
            .raise_for_status()
            .json()["id"]
        )
        print(f"  created demo detector {detector_id}")

    device_token_path = stack.run_dir / "device-token"
    if device_token_path.exists():
        device_token = device_token_path.read_text().strip()
    else:
        created = client.post("/v1/tokens", json={"name": "make-run-edge", "role": "device"}).raise_for_status().json()
        device_token = created["token"]
        device_token_path.write_text(device_token)
        device_token_path.chmod(0o600)

    demo_dir = stack.data / "demo"
    train_dir, queue_dir = demo_dir / "train", demo_dir / "queue"
    for images, per_class, seed in ((train_dir, 40, 7), (queue_dir, 3, 99)):
        if not images.exists():
            print(f"  generating demo images in {images.name}/ (a metal surface, some parts with a defect)")
            _generate_images(images, per_class, seed)

    if not client.get(f"/v1/detectors/{detector_id}/models").raise_for_status().json():
        print("  training the demo model (fast trainer)")
        build_dir = demo_dir / "models"
        _cli("train", str(train_dir), "--mode", "binary", "--out", str(build_dir), "--detector-id", detector_id)
        _upload_latest(client, build_dir, detector_id)

    if client.get("/v1/review/queue", params={"detector_id": detector_id}).raise_for_status().json()["count"] == 0:
        for image in sorted(queue_dir.rglob("*.png"))[:5]:
            client.post(
                "/v1/image-queries",
                params={"detector_id": detector_id, "human_review": "ALWAYS"},
                content=image.read_bytes(),
                headers={"Content-Type": "image/png"},
            ).raise_for_status()
        print("  queued demo images for review")
    return detector_id, device_token


def _cli(*args: str) -> None:
    subprocess.run([str(BIN / "intellioptics"), *args], check=True, cwd=REPO)


def _generate_images(images: Path, per_class: int, seed: int) -> None:
    """Generate beside ``images`` and rename: a run stopped half-way leaves no partial set
    that the next run would take for a finished one."""
    partial = images.with_name(f".{images.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    # One surface, as a line inspects one kind of part: the demo model answers most images
    # itself (measured: 0.99 right, 97 % answered at the 0.9 threshold on 100 unseen ones).
    _cli(
        "dataset", "generate", str(partial), "--kind", "binary", "--n-per-class", str(per_class), "--seed", str(seed),
        "--surface", "metal", "--strength", "2",
    )  # fmt: skip
    partial.rename(images)


def _upload_latest(client: httpx.Client, build_dir: Path, detector_id: str) -> None:
    """Register the freshly trained package in the cloud registry and make it active."""
    from intellioptics_common.model_package import read_latest

    primary = read_latest(build_dir, detector_id, "primary")
    oodd = read_latest(build_dir, detector_id, "oodd")
    if primary is None or oodd is None:
        raise SystemExit("the demo training produced no model package")
    manifest = {
        "primary_pipeline_config": primary.pipeline.to_dict(),
        "oodd_pipeline_config": oodd.pipeline.to_dict(),
        "primary_metadata": dataclasses.asdict(primary.metadata),
        "oodd_metadata": dataclasses.asdict(oodd.metadata),
        "metrics": primary.metadata.metrics,
        "training_set_size": primary.metadata.training_set_size,
        "class_counts": primary.metadata.class_counts,
        "dataset_image_query_ids": [],
        "trainer": primary.metadata.trainer,
        "activate": True,
        "decision_reason": "demo model seeded by make run",
    }

    client.post(
        f"/v1/detectors/{detector_id}/models",
        files={"primary": ("model.buf", primary.model_bytes()), "oodd": ("model.buf", oodd.model_bytes())},
        data={"manifest": json.dumps(manifest)},
    ).raise_for_status()


def write_edge_config(stack: Stack, detector_id: str, refresh_rate: float = 10.0) -> Path:
    path = stack.data / "edge" / "edge-config.yaml"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "global_config": {"refresh_rate": refresh_rate, "confident_audit_rate": 0.01},
        "edge_inference_configs": {"default": {"enabled": True}},
        "detectors": [
            {
                "detector_id": detector_id,
                "edge_inference_config": "default",
                "name": DEMO_NAME,
                "query": DEMO_QUERY,
                "mode": "BINARY",
                "confidence_threshold": 0.9,
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- main ---------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Piped into `tee` or a test, the banner must still arrive when printed.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # TextIO in typeshed
    # `kill`, systemd and CI runners stop with SIGTERM, which would otherwise end this
    # process at once and leave every service running in its own session.
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack()
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    admin_token = stack.secret("admin-token", "INTELLIOPTICS_BOOTSTRAP_TOKEN")
    web_dir = REPO / "cloud" / "frontend" / "dist"
    common_env = {"INTELLIOPTICS_DATA_DIR": str(stack.data)}
    print(f"IntelliOptics: starting the stack (data in {stack.data})")
    try:
        stack.start(
            "cloud",
            [PYTHON, "-m", "intellioptics_cloud"],
            {
                **common_env,
                "INTELLIOPTICS_CLOUD_PORT": str(stack.cloud_port),
                "INTELLIOPTICS_BOOTSTRAP_TOKEN": admin_token,
                **({"INTELLIOPTICS_WEB_DIR": str(web_dir)} if web_dir.is_dir() else {}),
            },
        )
        stack.wait_ready("cloud", f"{stack.cloud_url}/health/ready")
        detector_id, device_token = seed_demo(stack, admin_token)
        edge_config = write_edge_config(stack, detector_id)
        _seed_edge_model(stack, detector_id)

        stack.start(
            "worker",
            [PYTHON, "-m", "intellioptics_worker"],
            {**common_env, "INTELLIOPTICS_CLOUD_URL": stack.cloud_url, "INTELLIOPTICS_WORKER_TOKEN": admin_token},
        )
        stack.start(
            "inference",
            [PYTHON, "-m", "intellioptics_inference"],
            {
                **common_env,
                "INTELLIOPTICS_MODELS_DIR": str(stack.models_dir),
                "INTELLIOPTICS_INFERENCE_PORT": str(stack.inference_port),
            },
        )
        stack.start(
            "edge-api",
            [PYTHON, "-m", "intellioptics_edge"],
            {
                **common_env,
                "INTELLIOPTICS_EDGE_API_PORT": str(stack.edge_port),
                "INTELLIOPTICS_INFERENCE_URL": f"http://127.0.0.1:{stack.inference_port}",
                "INTELLIOPTICS_CLOUD_URL": stack.cloud_url,
                "INTELLIOPTICS_DEVICE_TOKEN": device_token,
                "INTELLIOPTICS_EDGE_CONFIG": str(edge_config),
                "INTELLIOPTICS_EDGE_DATA_DIR": str(stack.data / "edge"),
                "INTELLIOPTICS_MODELS_DIR": str(stack.models_dir),
                "INTELLIOPTICS_STREAMS_URL": f"http://127.0.0.1:{stack.streams_port}",
            },
        )
        # Camera streams of edge-config (none in the demo; add them with PUT /edge-config).
        # The device token is one the edge API accepts: the cloud confirms it.
        stack.start(
            "streams",
            [PYTHON, "-m", "intellioptics_streams"],
            {
                **common_env,
                "INTELLIOPTICS_STREAMS_HOST": "127.0.0.1",
                "INTELLIOPTICS_STREAMS_PORT": str(stack.streams_port),
                "INTELLIOPTICS_EDGE_API_URL": f"http://127.0.0.1:{stack.edge_port}",
                "INTELLIOPTICS_STREAMS_TOKEN": device_token,
            },
        )
        sys.path.insert(0, str(REPO / "edge" / "nginx"))
        from render import render  # edge/nginx/render.py

        nginx_conf = render(
            stack.run_dir / "nginx",
            port=stack.gateway_port,
            edge_api=f"127.0.0.1:{stack.edge_port}",
            cloud_url=stack.cloud_url,
            access_log=f"{stack.run_dir / 'logs' / 'nginx-access.log'} intellioptics_gateway",
        )
        nginx = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"
        stack.start(
            "nginx",
            [
                nginx,
                "-p",
                str(nginx_conf.parent),
                "-c",
                str(nginx_conf),
                "-g",
                f"daemon off; pid {nginx_conf.parent}/nginx.pid;",
            ],
            {},
        )
        stack.wait_ready("inference", f"http://127.0.0.1:{stack.inference_port}/health/ready")
        stack.wait_ready("edge-api", f"http://127.0.0.1:{stack.edge_port}/health/ready")
        stack.wait_ready("nginx", f"{stack.gateway_url}/health/live")
        stack.wait_ready("streams", f"http://127.0.0.1:{stack.streams_port}/health/ready")
        _print_banner(stack, admin_token, device_token, detector_id)
        while True:
            stack.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        stack.stop_all()


def _seed_edge_model(stack: Stack, detector_id: str) -> None:
    """Give the edge the demo model at once; later versions arrive through the model updater."""
    from intellioptics_common.model_package import latest_version, read_latest, write_version

    if latest_version(stack.models_dir, detector_id, "primary") is not None:
        return
    for kind in ("primary", "oodd"):
        package = read_latest(stack.data / "demo" / "models", detector_id, kind)
        if package is None:
            return
        write_version(
            stack.models_dir, detector_id, kind, model_bytes=package.model_bytes(), pipeline=package.pipeline,
            metadata=package.metadata, model_id=package.model_id,
        )  # fmt: skip


def _print_banner(stack: Stack, admin_token: str, device_token: str, detector_id: str) -> None:
    sample = next(iter(sorted((stack.data / "demo" / "queue").rglob("*.png"))), None)
    print(
        f"""
IntelliOptics is running. Ctrl-C stops everything; a service that exits is restarted.

  edge gateway (cameras, SDK)   {stack.gateway_url}
  edge status page              {stack.gateway_url}/status
  cloud API + web UI            {stack.cloud_url}/        (API docs: {stack.cloud_url}/docs)
  admin token                   {admin_token}
  device token (edge)           {device_token}
  demo detector                 {detector_id}
  logs                          {stack.run_dir / "logs"}

Ask the edge a question:
  curl -s -X POST "{stack.gateway_url}/device-api/v1/image-queries?detector_id={detector_id}" \\
       -H "x-api-token: {admin_token}" -H "Content-Type: image/png" --data-binary @{sample}

With the Groundlight SDK (pip install groundlight==1.3.1):
  from groundlight import Groundlight
  gl = Groundlight(endpoint="{stack.gateway_url}", api_token="{admin_token}")
  iq = gl.submit_image_query(detector="{detector_id}", image="{sample}", wait=0)
  print(iq.result)
"""
    )


if __name__ == "__main__":
    sys.exit(main())
