"""The offline edge exactly as docker-compose.edge.yml + deploy/edge-offline.yml configure
it, run as local processes (no Docker engine here), answering the real groundlight SDK.

Each process gets the environment ``docker-compose config`` resolves for its service from
a filled-in env template, with only what the container world provides changed, each
change checked to have happened: the volume mount points become temporary directories,
the compose service names become 127.0.0.1, and the fixed ports become free ports. So a
variable compose sets wrongly (a bad path, a typo in a value, production refusing a
setting) breaks this test the way it would break the deployed box.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from groundlight import Groundlight
from PIL import Image

from tests.deploy.deployment import (
    EDGE_COMPOSE,
    EDGE_ENV,
    EDGE_OFFLINE,
    NGINX_SERVICES,
    envsubst,
    official_image_nginx_conf,
    resolved_compose,
    service_environment,
    volume_targets,
    write_filled_env,
)
from tests.support.edge_stack import install_brightness_model
from tests.support.procs import free_port, nginx_process, python_module, running, wait_http

pytestmark = pytest.mark.integration

DETECTOR = "det_" + "Compose0Offline0Detector001"
ENV_TOKEN = "envtoken_" + secrets.token_hex(12)
FILE_TOKEN = "filetoken_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Stack:
    gateway: str
    volumes: dict[str, Path]


def localize(environment: dict[str, str | None], replacements: dict[str, str]) -> dict[str, str]:
    """Values as compose resolves them, with container-world parts swapped: a whole value
    ("0.0.0.0", "8001"), a path prefix ("/var/lib/intellioptics/models/...") or a
    host:port inside a URL. Every replacement must be used, so the mapping cannot go stale."""
    unused = set(replacements)
    result = {}
    for key, value in environment.items():
        if value is None:
            continue
        for old, new in replacements.items():
            if value == old:
                value = new
            elif old.startswith("/") and value.startswith(old + "/"):
                value = new + value[len(old) :]
            elif ":" in old and not old.startswith("/") and old in value:
                value = value.replace(old, new)
            else:
                continue
            unused.discard(old)
        result[key] = value
    assert not unused, f"compose no longer uses {sorted(unused)}: update this test"
    return result


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("edge-compose")
    env_file = write_filled_env(
        EDGE_ENV,
        base / "edge.env",
        {
            "INTELLIOPTICS_DEVICE_TOKEN": None,
            "INTELLIOPTICS_EDGE_TOKENS": ENV_TOKEN,
            "INTELLIOPTICS_LOG_LEVEL": "WARNING",
        },
    )
    services = resolved_compose((EDGE_COMPOSE, EDGE_OFFLINE), env_file)["services"]

    # The named volumes, as directories; what compose mounts where.
    volumes: dict[str, Path] = {}
    for name in ("inference", "edge-api"):
        for target in volume_targets(services[name]):
            volumes[target] = base / "volumes" / target.strip("/").replace("/", "_")
            volumes[target].mkdir(parents=True, exist_ok=True)
    models = volumes["/var/lib/intellioptics/models"]
    config_dir = volumes["/etc/intellioptics/edge"]
    install_brightness_model(models, DETECTOR)  # as an operator places a package into the volume
    (config_dir / "edge-config.yaml").write_text(
        yaml.safe_dump(
            {
                "global_config": {"refresh_rate": 60, "confident_audit_rate": 0},
                "detectors": [
                    {"detector_id": DETECTOR, "name": "bright", "query": "Bright?", "confidence_threshold": 0.8}
                ],
            }
        )
    )
    (config_dir / "tokens.txt").write_text(f"# one token per line\n{FILE_TOKEN}\n")

    inference_port, edge_port, gateway_port = free_port(), free_port(), free_port()
    paths = {target: str(path) for target, path in volumes.items()}
    inference_env = localize(
        service_environment(services["inference"]),
        {**{k: v for k, v in paths.items() if "models" in k}, "0.0.0.0": "127.0.0.1", "8001": str(inference_port)},
    )
    edge_env = localize(
        service_environment(services["edge-api"]),
        {
            **paths,
            "0.0.0.0": "127.0.0.1",
            "8718": str(edge_port),
            "http://inference:8001": f"http://127.0.0.1:{inference_port}",
        },
    )
    assert edge_env["INTELLIOPTICS_ENVIRONMENT"] == "production" and edge_env["INTELLIOPTICS_CLOUD_URL"] == ""
    gateway_env = localize(
        service_environment(services["nginx"]),
        {"edge-api:8718": f"127.0.0.1:{edge_port}", "30101": f"127.0.0.1:{gateway_port}"},
    )
    template = NGINX_SERVICES[(EDGE_COMPOSE, "nginx")]
    prefix = base / "nginx"
    (prefix / "conf.d").mkdir(parents=True)
    (prefix / "tmp").mkdir()
    (prefix / "conf.d" / "gateway.conf").write_text(envsubst(template.read_text(), gateway_env))
    (prefix / "nginx.conf").write_text(official_image_nginx_conf(prefix, prefix / "conf.d"))

    logs = base / "logs"
    inference = python_module("inference", "intellioptics_inference", logs, inference_env)
    edge_api = python_module("edge-api", "intellioptics_edge", logs, edge_env)
    gateway = nginx_process(prefix / "nginx.conf", prefix)
    with running(inference), running(edge_api), running(gateway):
        wait_http(f"http://127.0.0.1:{inference_port}/detectors/{DETECTOR}/ready", timeout=60, process=inference)
        wait_http(f"http://127.0.0.1:{edge_port}/health/ready", timeout=60, process=edge_api)
        wait_http(f"http://127.0.0.1:{gateway_port}/health/live", timeout=30, process=gateway)
        yield Stack(f"http://127.0.0.1:{gateway_port}", volumes)


def test_sdk_answered_by_the_compose_configured_edge(stack: Stack) -> None:
    gl = Groundlight(endpoint=stack.gateway, api_token=ENV_TOKEN)
    answer = gl.submit_image_query(DETECTOR, jpeg((255, 255, 255)), wait=0)
    assert answer.result.label.value == "YES" and answer.result.from_edge
    assert gl.get_image_query(answer.id).id == answer.id
    # State went where compose mounts a volume: the query store and outbox in edge-data.
    assert (stack.volumes["/var/lib/intellioptics/edge"] / "edge.sqlite3").is_file()


def test_tokens_from_env_and_from_the_config_volume(stack: Stack) -> None:
    image = jpeg((0, 0, 0))
    url = f"{stack.gateway}/device-api/v1/image-queries?detector_id={DETECTOR}"
    for token in (ENV_TOKEN, FILE_TOKEN):
        answer = httpx.post(url, content=image, headers={"x-api-token": token, "content-type": "image/jpeg"})
        assert answer.status_code == 201 and answer.json()["result"]["label"] == "NO"
    refused = httpx.post(url, content=image, headers={"x-api-token": "not_a_known_token_00000000"})
    assert refused.status_code == 401 and refused.json()["code"]


def test_offline_gateway_says_so(stack: Stack) -> None:
    """What only a cloud could answer gets the gateway's JSON 404, not a hang or a 502."""
    answer = httpx.get(f"{stack.gateway}/v1/detectors", headers={"x-api-token": ENV_TOKEN})
    assert answer.status_code == 404 and answer.json()["code"] == "edge_offline"


def test_edge_config_put_lands_in_the_config_volume(stack: Stack) -> None:
    current = httpx.get(f"{stack.gateway}/edge-config", headers={"x-api-token": ENV_TOKEN}).json()
    current["global_config"]["refresh_rate"] = 120
    put = httpx.put(f"{stack.gateway}/edge-config", json=current, headers={"x-api-token": ENV_TOKEN})
    assert put.status_code == 200
    written = yaml.safe_load((stack.volumes["/etc/intellioptics/edge"] / "edge-config.yaml").read_text())
    assert written["global_config"]["refresh_rate"] == 120
