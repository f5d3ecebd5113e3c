"""The Dockerfiles, read as Docker reads them: what they copy exists and is in the build
context, bases are pinned, images run as a non-root user, edge images stay small, and
what they run and expose is what the compose files and the services expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.deployment import (
    CLOUD_COMPOSE,
    CLOUD_ENV,
    DEPLOY,
    DOCKERFILES,
    EDGE_COMPOSE,
    EDGE_DOCKERFILES,
    EDGE_ENV,
    REPO,
    DockerIgnore,
    copy_sources,
    exec_form,
    parse_dockerfile,
    raw_compose,
    resolved_compose,
    source_files,
)

IDS = [path.stem for path in DOCKERFILES]
DOCKERIGNORE = DockerIgnore.read(REPO / ".dockerignore")
PINNED_BASE = re.compile(r"^[a-z0-9][a-z0-9._/-]*:\d+(\.\d+)+(-[a-z0-9.]+)*$")
# Files a build never needs: tests, caches, installed dependencies, build outputs.
NOT_FOR_IMAGES = re.compile(
    r"(^|/)(tests|__pycache__|node_modules|dist|test-output)(/|$)|\.test\.tsx?$|\.egg-info(/|$)"
)


def test_every_image_has_a_dockerfile() -> None:
    assert {path.name for path in DOCKERFILES} >= {
        "inference.Dockerfile",
        "edge-api.Dockerfile",
        "edge-nginx.Dockerfile",
        "streams.Dockerfile",
        "cloud-api.Dockerfile",
        "worker.Dockerfile",
        "cloud-nginx.Dockerfile",
        "azurite.Dockerfile",
    }
    used = set()
    for compose in (EDGE_COMPOSE, CLOUD_COMPOSE):
        for name, service in raw_compose(compose)["services"].items():
            if "build" in service:
                assert service["build"]["context"] == ".", f"{name}: images are built from the repository root"
                used.add(service["build"]["dockerfile"])
    assert used == {f"deploy/{path.name}" for path in DOCKERFILES}


def test_dockerignore_semantics() -> None:
    """The matcher the checks below rely on, on cases whose answer Docker documents."""
    assert DOCKERIGNORE.excluded("README.md")
    assert DOCKERIGNORE.excluded(".venv/bin/python")
    assert DOCKERIGNORE.excluded("data/backbones/efficientnet_lite0/backbone.onnx")
    assert not DOCKERIGNORE.excluded("common/src/intellioptics_common/schemas.py")
    assert DOCKERIGNORE.excluded("common/src/intellioptics_common/__pycache__/schemas.cpython-311.pyc")
    assert DOCKERIGNORE.excluded("common/tests/test_imaging.py")
    assert DOCKERIGNORE.excluded("cloud/frontend/node_modules/react/index.js")
    assert DOCKERIGNORE.excluded("cloud/frontend/src/review/keys.test.ts")
    assert not DOCKERIGNORE.excluded("cloud/frontend/src/review/keys.ts")
    assert DOCKERIGNORE.excluded("deploy/cloud.env")  # an operator's filled-in secrets
    assert not DOCKERIGNORE.excluded("deploy/cloud.env.example")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_and_are_in_the_context(dockerfile: Path) -> None:
    parsed = parse_dockerfile(dockerfile)
    stage_names = {stage.name for stage in parsed.stages}
    for stage in parsed.stages:
        assert not stage.all("ADD"), f"{dockerfile.name}: use COPY (ADD fetches URLs and unpacks archives)"
        for instruction in stage.all("COPY"):
            flags, sources, _ = copy_sources(instruction)
            if "from" in flags:
                assert flags["from"] in stage_names, f"{dockerfile.name}:{instruction.line}: unknown stage"
                continue
            for source in sources:
                path = REPO / source
                assert path.exists(), f"{dockerfile.name}:{instruction.line}: COPY {source}: no such file"
                files = source_files(path) if path.is_dir() else [source]
                assert files, f"{dockerfile.name}:{instruction.line}: COPY {source} copies nothing"
                wanted = [f for f in files if not NOT_FOR_IMAGES.search(f)]
                left_out = [f for f in wanted if DOCKERIGNORE.excluded(f)]
                assert not left_out, f"{dockerfile.name}: .dockerignore drops files COPY {source} needs: {left_out[:5]}"
                sent = [f for f in files if not DOCKERIGNORE.excluded(f)]
                assert sent, f"{dockerfile.name}: .dockerignore drops all of {source}"
                test_files = [f for f in sent if NOT_FOR_IMAGES.search(f)]
                assert not test_files, f"{dockerfile.name}: test or build files reach the image: {test_files[:5]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_bases_are_pinned_and_runtime_is_not_root(dockerfile: Path) -> None:
    parsed = parse_dockerfile(dockerfile)
    for stage in parsed.stages:
        base = parsed.resolve(stage.base)
        if base in {s.name for s in parsed.stages}:
            continue
        assert PINNED_BASE.match(base), f"{dockerfile.name}: base {base!r} is not pinned to a version tag"
        assert "latest" not in base
        if "python:" in base:
            assert base.startswith("python:3.11.") and base.endswith("-slim-bookworm"), base
        if "nginx:" in base:
            assert base.endswith("-alpine"), base
    users = parsed.final.all("USER")
    assert users, f"{dockerfile.name}: the runtime stage sets no USER"
    assert users[-1].arguments.split(":")[0] not in {"root", "0"}
    assert parsed.final.all("CMD") or parsed.final.base.startswith("${NGINX_IMAGE}"), dockerfile.name


@pytest.mark.parametrize("dockerfile", EDGE_DOCKERFILES, ids=[p.stem for p in EDGE_DOCKERFILES])
def test_edge_images_stay_small(dockerfile: Path) -> None:
    """No PyTorch, no training library, no compiler in anything that runs on an edge box."""
    parsed = parse_dockerfile(dockerfile)
    text = " ".join(i.arguments for stage in parsed.stages for i in stage.instructions)
    assert "torch" not in text.lower()
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get|apk add)\b", text), "no compilers or packages"
    for stage in parsed.stages:
        for instruction in stage.all("COPY"):
            flags, sources, _ = copy_sources(instruction)
            assert not any(s.startswith(("training", "cloud")) for s in sources), sources
    final_copies = [copy_sources(i) for i in parsed.final.all("COPY")]
    if len(parsed.stages) > 1:  # multi-stage: the runtime takes only the built venv and config
        assert all(
            "from" in flags or sources[0].startswith(("edge/nginx", "deploy/")) for flags, sources, _ in final_copies
        )


def test_worker_builds_torch_cpu_and_the_backbone() -> None:
    parsed = parse_dockerfile(DEPLOY / "worker.Dockerfile")
    build = parsed.stages[0]
    args = {i.arguments.split("=")[0]: i.arguments for i in build.all("ARG")}
    assert args.get("TORCH_INDEX_URL") == 'TORCH_INDEX_URL=""', "no default index host in a committed file"
    runs = " ".join(i.arguments for i in build.all("RUN"))
    assert '"torch==2.13.0"' in runs and "${TORCH_INDEX_URL}" in runs
    assert "intellioptics backbone export --out /opt/intellioptics-backbones/efficientnet_lite0" in runs
    env = " ".join(i.arguments for i in parsed.final.all("ENV"))
    assert "INTELLIOPTICS_BACKBONE_DIR=/opt/intellioptics-backbones/efficientnet_lite0" in env
    compose = resolved_compose((CLOUD_COMPOSE,), CLOUD_ENV)["services"]["worker"]
    assert compose["build"]["args"] == {"TORCH_INDEX_URL": ""}


def test_no_registry_hosts_in_deployment_files() -> None:
    """Images and packages are named, never fetched from a named host."""
    files = [*DOCKERFILES, *DEPLOY.glob("*.example"), *DEPLOY.glob("*.yml"), EDGE_COMPOSE, CLOUD_COMPOSE]
    files += [REPO / "docs" / name for name in ("operations.md", "configuration.md", "scaling.md")]
    registry_words = re.compile(r"pypi\.org|pytorch\.org|npmjs|docker\.io|ghcr\.io|mcr\.microsoft|quay\.io|gcr\.io")
    for path in files:
        assert not registry_words.search(path.read_text()), path.name
    for path in DOCKERFILES:
        for stage in parse_dockerfile(path).stages:
            assert "/" not in stage.base.split(":")[0] or stage.base.startswith("$"), stage.base


@pytest.mark.parametrize(
    ("dockerfile", "compose", "env_file", "service", "port"),
    [
        ("inference", EDGE_COMPOSE, EDGE_ENV, "inference", 8001),
        ("edge-api", EDGE_COMPOSE, EDGE_ENV, "edge-api", 8718),
        ("edge-nginx", EDGE_COMPOSE, EDGE_ENV, "nginx", 30101),
        ("streams", EDGE_COMPOSE, EDGE_ENV, "streams", 8719),
        ("cloud-api", CLOUD_COMPOSE, CLOUD_ENV, "cloud-api", 8000),
        ("worker", CLOUD_COMPOSE, CLOUD_ENV, "worker", None),
        ("cloud-nginx", CLOUD_COMPOSE, CLOUD_ENV, "nginx", 8080),
    ],
)
def test_image_command_and_port_match_compose(
    dockerfile: str, compose: Path, env_file: Path, service: str, port: int | None
) -> None:
    parsed = parse_dockerfile(DEPLOY / f"{dockerfile}.Dockerfile")
    exposed = [int(p) for i in parsed.final.all("EXPOSE") for p in i.arguments.split()]
    assert exposed == ([] if port is None else [port])
    definition = resolved_compose((compose,), env_file)["services"][service]
    commands = parsed.final.all("CMD")
    if commands:  # Python images: the image alone runs what compose runs
        assert exec_form(commands[-1].arguments) == definition["command"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_installs_are_pinned(dockerfile: Path) -> None:
    """pip installs go through constraints.txt (or name an exact version); npm through the lock file."""
    for stage in parse_dockerfile(dockerfile).stages:
        for instruction in stage.all("RUN"):
            for command in re.split(r"&&|;|\bthen\b|\belse\b", instruction.arguments):
                if re.search(r"\bpip install\b", command):
                    assert "-c constraints.txt" in command or re.search(r'"[\w-]+==[\d.]+"', command), command
                if re.search(r"\bnpm (install|i)\b", command):
                    assert re.search(r"@\$\{\w+\}|@\d+\.\d+\.\d+", command), f"npm install without a version: {command}"
                if "npm ci" in command:
                    assert any("package-lock.json" in i.arguments for i in stage.all("COPY")), "npm ci needs the lock"
