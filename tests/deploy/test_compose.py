"""The compose files against the services they run: variables, ports, commands, volumes.

Each service's Settings class is the truth: a variable in compose that no Settings class
reads, a required or secret setting missing from compose, a port that differs from the
service's default, or a documented default that differs from the code fails here.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import secrets
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import TypeAdapter, ValidationError

from tests.deploy.deployment import (
    CLOUD_COMPOSE,
    CLOUD_ENV,
    EDGE_COMPOSE,
    EDGE_ENV,
    EDGE_OFFLINE,
    NGINX_SERVICES,
    PREFIX,
    PYTHON_SERVICES,
    PythonService,
    compose_command,
    image_environment,
    interpolated_names,
    passed_through,
    raw_compose,
    read_env_template,
    resolved_compose,
    service_environment,
    settings_fields,
    template_placeholders,
    volume_targets,
    write_filled_env,
)

COMPOSE_ENV = {EDGE_COMPOSE: EDGE_ENV, CLOUD_COMPOSE: CLOUD_ENV}
SERVICE_IDS = [f"{s.compose.stem.split('.')[-1]}:{s.name}" for s in PYTHON_SERVICES]


def resolved(service: PythonService) -> dict[str, Any]:
    return resolved_compose((service.compose,), COMPOSE_ENV[service.compose])["services"][service.name]


def default_of(info: Any) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


@pytest.mark.parametrize(
    ("files", "env_file", "profiles"),
    [
        ((EDGE_COMPOSE,), EDGE_ENV, ()),
        ((EDGE_COMPOSE, EDGE_OFFLINE), EDGE_ENV, ()),
        ((CLOUD_COMPOSE,), CLOUD_ENV, ()),
        ((CLOUD_COMPOSE,), CLOUD_ENV, ("azurite",)),
    ],
    ids=["edge", "edge-offline", "cloud", "cloud-azurite"],
)
def test_compose_config_is_valid(files: tuple[Path, ...], env_file: Path, profiles: tuple[str, ...]) -> None:
    """docker-compose accepts the files with the templates as shipped (it fails otherwise)."""
    services = resolved_compose(files, env_file, profiles)["services"]
    assert services and all(s.get("image") and s.get("healthcheck") for s in services.values())


def test_services_and_profiles() -> None:
    edge = resolved_compose((EDGE_COMPOSE,), EDGE_ENV)["services"]
    assert set(edge) == {"nginx", "edge-api", "inference", "streams"}
    cloud = resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]
    default = {name for name, service in cloud.items() if not service.get("profiles")}
    assert default == {"nginx", "cloud-api", "worker", "postgres"}
    assert cloud["azurite"]["profiles"] == ["azurite"]  # only with --profile azurite
    # Health checks use only what the image has: python in ours, busybox wget in nginx
    # (alpine), pg_isready in postgres, node in the Azurite image. No curl anywhere.
    tools = {"nginx": "wget", "postgres": "pg_isready", "azurite": "node"}
    for services in (edge, cloud):
        for name, service in services.items():
            assert service.get("restart") == "unless-stopped", name
            test = service.get("healthcheck", {}).get("test")
            assert test, f"{name} has no health check"
            tool = test[1].split()[0]
            assert tool == tools.get(name, "python"), f"{name}: health check runs {tool}"


def test_missing_secrets_are_refused_by_compose(tmp_path: Path) -> None:
    env_file = write_filled_env(CLOUD_ENV, tmp_path / "cloud.env", {"POSTGRES_PASSWORD": None})
    result = compose_command((CLOUD_COMPOSE,), env_file, "config", "-q")
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=SERVICE_IDS)
def test_environment_matches_settings(service: PythonService) -> None:
    fields = settings_fields(service)
    compose_keys = set(service_environment(resolved(service)))
    image_keys = {key for key in image_environment(service.dockerfile) if key.startswith(PREFIX)}
    ours = compose_keys | image_keys
    strangers = {key for key in compose_keys if not key.startswith(PREFIX)}
    assert not strangers, f"non-INTELLIOPTICS variables given to {service.name}: {strangers}"

    unknown = ours - set(fields)
    assert not unknown, f"{service.name}: compose/Dockerfile set variables no Settings class reads: {sorted(unknown)}"

    required = {name for name, (info, _) in fields.items() if info.is_required()}
    secret = set()
    for spec_cls in {cls for _, cls in fields.values()}:
        probe = spec_cls.model_construct()
        if hasattr(probe, "secret_fields"):
            secret |= {f"{PREFIX}{name.upper()}" for name in probe.secret_fields()}
    assert not (required | secret) - ours, (
        f"{service.name}: required or secret settings missing: {(required | secret) - ours}"
    )

    excluded = {f"{PREFIX}{name.upper()}" for name in service.not_in_compose}
    assert excluded <= set(fields), f"stale exclusions in tests/deploy/deployment.py: {excluded - set(fields)}"
    uncovered = set(fields) - ours - excluded
    assert not uncovered, (
        f"{service.name}: settings that compose neither sets nor passes through: {sorted(uncovered)} "
        "(add them to the compose file, the env template and docs/configuration.md)"
    )
    assert resolved(service)["environment"][f"{PREFIX}ENVIRONMENT"] == "production"


@pytest.mark.parametrize("compose", [EDGE_COMPOSE, CLOUD_COMPOSE], ids=["edge", "cloud"])
def test_env_template_documents_compose(compose: Path) -> None:
    """Every variable operators may set is in the template; every template line is used."""
    template = read_env_template(COMPOSE_ENV[compose])
    services = raw_compose(compose)["services"]
    optional = set().union(*(passed_through(compose, name) for name in services))
    assert optional <= template.names, f"not in {COMPOSE_ENV[compose].name}: {sorted(optional - template.names)}"
    used = optional | interpolated_names(compose)
    unused = template.names - used
    assert not unused, f"{COMPOSE_ENV[compose].name} names variables that {compose.name} never uses: {sorted(unused)}"


@pytest.mark.parametrize("compose", [EDGE_COMPOSE, CLOUD_COMPOSE], ids=["edge", "cloud"])
def test_documented_defaults_are_the_real_defaults(compose: Path) -> None:
    template = read_env_template(COMPOSE_ENV[compose])
    fields: dict[str, tuple[Any, Any]] = {}
    for service in PYTHON_SERVICES:
        if service.compose == compose:
            fields.update(settings_fields(service))
    checked = 0
    for name, text in template.documented_defaults.items():
        if name not in fields:
            continue
        info, _ = fields[name]
        default = default_of(info)
        if text == "":
            assert default in ("", None), f"{name}: documented as empty, default is {default!r}"
        else:
            assert TypeAdapter(info.annotation).validate_python(text) == default, f"{name}: {text!r} != {default!r}"
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=SERVICE_IDS)
def test_command_module_exists(service: PythonService) -> None:
    command = resolved(service)["command"]
    assert command[:2] == ["python", "-m"], command
    assert command[2] == service.module
    assert importlib.util.find_spec(f"{service.module}.__main__") is not None, (
        f"python -m {service.module} has no __main__"
    )
    entry = importlib.import_module(f"{service.module}.__main__")  # what the process imports first
    assert callable(getattr(entry, "main", None)), f"{service.module}.__main__ has no main()"


def _port_field(service: PythonService) -> str:
    return {
        "inference": "INTELLIOPTICS_INFERENCE_PORT",
        "edge-api": "INTELLIOPTICS_EDGE_API_PORT",
        "cloud-api": "INTELLIOPTICS_CLOUD_PORT",
        "streams": "INTELLIOPTICS_STREAMS_PORT",
    }[service.name]


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    start = test.index("http://")
    return test[start:].split("'")[0].split()[0]


@pytest.mark.parametrize("service", [s for s in PYTHON_SERVICES if s.name != "worker"], ids=lambda s: s.name)
def test_ports_agree_with_settings(service: PythonService) -> None:
    fields = settings_fields(service)
    port_name = _port_field(service)
    default_port = default_of(fields[port_name][0])
    compose = resolved(service)
    environment = service_environment(compose)
    assert int(environment[port_name]) == default_port
    assert [int(p) for p in compose["expose"]] == [default_port]
    assert urlsplit(_healthcheck_url(compose)).port == default_port
    host_name = port_name.replace("_PORT", "_HOST")
    assert environment[host_name] == "0.0.0.0", f"{host_name} must listen on all interfaces in a container"


def test_services_reach_each_other_on_the_right_ports() -> None:
    edge = resolved_compose((EDGE_COMPOSE,), EDGE_ENV)["services"]
    cloud = resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]
    inference_url = urlsplit(edge["edge-api"]["environment"]["INTELLIOPTICS_INFERENCE_URL"])
    assert (inference_url.hostname, inference_url.port) == ("inference", 8001)
    assert edge["nginx"]["environment"]["INTELLIOPTICS_EDGE_API_UPSTREAM"] == "edge-api:8718"
    assert edge["nginx"]["environment"]["INTELLIOPTICS_GATEWAY_PORT"] == "30101"
    assert (
        edge["nginx"]["environment"]["INTELLIOPTICS_CLOUD_URL"]
        == edge["edge-api"]["environment"]["INTELLIOPTICS_CLOUD_URL"]
    )
    assert [(p["target"], p["published"]) for p in edge["nginx"]["ports"]] == [(30101, 30101)]
    streams_url = urlsplit(edge["edge-api"]["environment"]["INTELLIOPTICS_STREAMS_URL"])
    assert (streams_url.hostname, streams_url.port) == ("streams", 8719)
    edge_api_url = urlsplit(edge["streams"]["environment"]["INTELLIOPTICS_EDGE_API_URL"])
    assert (edge_api_url.hostname, edge_api_url.port) == ("edge-api", 8718)
    assert urlsplit(_healthcheck_url(edge["nginx"])).port == 30101

    worker_url = urlsplit(cloud["worker"]["environment"]["INTELLIOPTICS_CLOUD_URL"])
    assert (worker_url.hostname, worker_url.port) == ("cloud-api", 8000)
    assert cloud["nginx"]["environment"]["INTELLIOPTICS_CLOUD_API_UPSTREAM"] == "cloud-api:8000"
    assert [p["target"] for p in cloud["nginx"]["ports"]] == [8080]
    assert urlsplit(_healthcheck_url(cloud["nginx"])).port == 8080
    database = urlsplit(cloud["cloud-api"]["environment"]["INTELLIOPTICS_DATABASE_URL"])
    assert (database.scheme, database.hostname, database.port, database.path) == (
        "postgresql+psycopg2", "postgres", 5432, "/intellioptics",
    )  # fmt: skip
    assert cloud["postgres"]["image"].startswith("postgres:15.")
    # Only the gateways publish ports; replicas behind them must not (or --scale fails).
    for services in (edge, cloud):
        for name, service in services.items():
            assert bool(service.get("ports")) == (name == "nginx"), name
            assert "container_name" not in service, name


@pytest.mark.parametrize(("compose", "name"), list(NGINX_SERVICES), ids=["edge", "cloud"])
def test_nginx_environment_matches_template(compose: Path, name: str) -> None:
    template = NGINX_SERVICES[(compose, name)]
    environment = service_environment(resolved_compose((compose,), COMPOSE_ENV[compose])["services"][name])
    placeholders = template_placeholders(template)
    # The image's envsubst leaves an unset ${NAME} in place, which nginx then refuses.
    assert {key for key, value in environment.items() if value is not None} >= placeholders
    assert set(environment) == placeholders, f"variables the template does not use: {set(environment) - placeholders}"


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=SERVICE_IDS)
def test_state_lives_on_volumes(service: PythonService) -> None:
    """Paths a service keeps state in are on volumes; every volume is used by a path setting."""
    compose = resolved(service)
    fields = settings_fields(service)
    environment = {**image_environment(service.dockerfile), **service_environment(compose)}
    mounts = [PurePosixPath(target) for target in volume_targets(compose)]
    paths = {
        key: PurePosixPath(value)
        for key, value in environment.items()
        if key in fields and value and fields[key][0].annotation in (Path, Path | None)
    }
    scratch = {"INTELLIOPTICS_WORK_DIR", "INTELLIOPTICS_BACKBONE_DIR"}  # worker scratch; backbone is in the image
    for key, path in paths.items():
        if key in scratch or (service.name == "worker" and key == "INTELLIOPTICS_DATA_DIR"):
            continue
        assert any(path == m or m in path.parents for m in mounts), f"{service.name}: {key}={path} is on no volume"
    for mount in mounts:
        assert any(p == mount or mount in p.parents for p in paths.values()), f"{service.name}: nothing uses {mount}"


def _build_settings(service: PythonService, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    from tests.deploy.deployment import load_class

    return [load_class(spec)() for spec in service.settings]


def _container_environment(service: PythonService, env_file: Path, extra: tuple[Path, ...] = ()) -> dict[str, str]:
    compose = resolved_compose((service.compose, *extra), env_file)["services"][service.name]
    values = {k: v for k, v in service_environment(compose).items() if v is not None}
    return {**image_environment(service.dockerfile), **values}


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=SERVICE_IDS)
def test_example_placeholders_are_refused(service: PythonService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with the template as it is, a service that has secrets refuses to start."""
    environment = _container_environment(service, COMPOSE_ENV[service.compose])
    has_secret = any(value == "change-me" for value in environment.values())
    if not has_secret:
        _build_settings(service, environment, monkeypatch)  # no secrets: starts as shipped
        return
    with pytest.raises(ValidationError, match="placeholder"):
        _build_settings(service, environment, monkeypatch)


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """The templates with every change-me replaced, as an operator fills them in."""
    tmp_path = tmp_path_factory.mktemp("env")
    token = secrets.token_hex(24)
    cloud = write_filled_env(
        CLOUD_ENV,
        tmp_path / "cloud.env",
        {
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "INTELLIOPTICS_SECRET_KEY": secrets.token_hex(32),
            "INTELLIOPTICS_BOOTSTRAP_TOKEN": token,
            "INTELLIOPTICS_WORKER_TOKEN": token,
        },
    )
    edge = write_filled_env(
        EDGE_ENV,
        tmp_path / "edge.env",
        {"INTELLIOPTICS_DEVICE_TOKEN": secrets.token_hex(24), "INTELLIOPTICS_STREAMS_TOKEN": secrets.token_hex(24)},
    )
    return {CLOUD_COMPOSE: cloud, EDGE_COMPOSE: edge}


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=SERVICE_IDS)
def test_filled_template_gives_valid_settings(
    service: PythonService, filled_env: dict[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = _container_environment(service, filled_env[service.compose])
    built = _build_settings(service, environment, monkeypatch)
    main = built[0]
    assert main.environment == "production"
    # Read per request, not checked at start: a typo would be a 500 on every request.
    for network in getattr(main, "trusted_proxy_networks", ()):
        ipaddress.ip_network(network)
    if service.name == "cloud-api":
        assert main.resolved_database_url.startswith("postgresql+psycopg2://intellioptics:")
        assert str(main.resolved_blob_dir) == "/var/lib/intellioptics/blobs"
    if service.name == "edge-api":
        assert not main.offline and main.cloud_base == "http://cloud.example.internal:8080"
        assert str(main.edge_config_path) == "/etc/intellioptics/edge/edge-config.yaml"


def test_offline_override_runs_without_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write_filled_env(
        EDGE_ENV,
        tmp_path / "edge.env",
        {"INTELLIOPTICS_DEVICE_TOKEN": None, "INTELLIOPTICS_EDGE_TOKENS": "tok_" + "a" * 30},
    )
    service = next(s for s in PYTHON_SERVICES if s.name == "edge-api")
    environment = _container_environment(service, env_file, (EDGE_OFFLINE,))
    (settings,) = _build_settings(service, environment, monkeypatch)
    assert settings.offline and settings.device_token is None
    assert settings.local_tokens() == {"tok_" + "a" * 30}
    nginx = resolved_compose((EDGE_COMPOSE, EDGE_OFFLINE), env_file)["services"]["nginx"]
    assert nginx["environment"]["INTELLIOPTICS_CLOUD_URL"] == ""
