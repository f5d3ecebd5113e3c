"""Readers for the deployment files, shared by the tests in this folder.

No Docker engine runs here, so the files are checked by what can read them: Debian's
``docker-compose`` resolves the compose files (``config``), nginx checks and runs the
configurations, and the small parsers below read Dockerfiles, ``.dockerignore`` and the
``.env`` templates the way Docker does, closely enough to catch drift.
"""

from __future__ import annotations

import functools
import importlib
import os
import posixpath
import pwd
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EDGE_COMPOSE = REPO / "docker-compose.edge.yml"
CLOUD_COMPOSE = REPO / "docker-compose.cloud.yml"
EDGE_OFFLINE = DEPLOY / "edge-offline.yml"
EDGE_ENV = DEPLOY / "edge.env.example"
CLOUD_ENV = DEPLOY / "cloud.env.example"
PREFIX = "INTELLIOPTICS_"


@dataclass(frozen=True)
class PythonService:
    """A compose service that runs one of our Python packages."""

    compose: Path
    name: str
    module: str  # what `python -m` runs
    dockerfile: Path
    settings: tuple[str, ...]  # "module:Class" of every Settings class the process reads
    # Settings fields deliberately not set in compose, each with the reason.
    not_in_compose: dict[str, str] = field(default_factory=dict)


PYTHON_SERVICES = (
    PythonService(
        EDGE_COMPOSE,
        "inference",
        "intellioptics_inference",
        DEPLOY / "inference.Dockerfile",
        ("intellioptics_inference.settings:InferenceSettings",),
    ),
    PythonService(
        EDGE_COMPOSE,
        "edge-api",
        "intellioptics_edge",
        DEPLOY / "edge-api.Dockerfile",
        ("intellioptics_edge.settings:EdgeSettings",),
    ),
    PythonService(
        EDGE_COMPOSE,
        "streams",
        "intellioptics_streams",
        DEPLOY / "streams.Dockerfile",
        ("intellioptics_streams.settings:StreamsSettings",),
    ),
    PythonService(
        CLOUD_COMPOSE,
        "cloud-api",
        "intellioptics_cloud",
        DEPLOY / "cloud-api.Dockerfile",
        ("intellioptics_cloud.settings:CloudSettings",),
        not_in_compose={"web_dir": "the cloud nginx image serves the web UI, so the API does not"},
    ),
    PythonService(
        CLOUD_COMPOSE,
        "worker",
        "intellioptics_worker",
        DEPLOY / "worker.Dockerfile",
        ("intellioptics_worker.settings:WorkerSettings", "intellioptics_training.config:TrainingSettings"),
        not_in_compose={
            "worker_id": "the default (container host name and pid) differs per replica; a fixed value would not",
        },
    ),
)

# nginx services: their INTELLIOPTICS_* variables are the placeholders of their template.
NGINX_SERVICES = {
    (EDGE_COMPOSE, "nginx"): REPO / "edge" / "nginx" / "templates" / "gateway.conf.template",
    (CLOUD_COMPOSE, "nginx"): DEPLOY / "cloud-nginx" / "templates" / "default.conf.template",
}

DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
EDGE_DOCKERFILES = (
    DEPLOY / "inference.Dockerfile",
    DEPLOY / "edge-api.Dockerfile",
    DEPLOY / "edge-nginx.Dockerfile",
    DEPLOY / "streams.Dockerfile",
)


# --- compose --------------------------------------------------------------------------


def docker_compose_binary() -> str:
    found = shutil.which("docker-compose")
    if not found:
        raise FileNotFoundError("docker-compose not found; run `make system-deps`")
    return found


def compose_command(files: tuple[Path, ...], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f ... --env-file ... <args>`` with a clean environment, so that
    variables of the shell running the tests (the Makefile exports some) change nothing."""
    command = [docker_compose_binary()]
    for path in files:
        command += ["-f", str(path)]
    command += ["--project-directory", str(REPO), "--env-file", str(env_file), *args]
    clean = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean, cwd=REPO, check=False)


@functools.cache
def resolved_compose(files: tuple[Path, ...], env_file: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model docker-compose builds from the files: interpolated, merged, normalised."""
    profile_args = [arg for name in profiles for arg in ("--profile", name)]
    result = compose_command(files, env_file, *profile_args, "config")
    if result.returncode != 0:
        raise AssertionError(f"docker-compose config failed:\n{result.stderr}")
    return yaml.safe_load(result.stdout)


def raw_compose(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """Resolved environment of a service; None: listed without a value and not set."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in environment)
        return dict(pairs)
    return {key: None if value is None else str(value) for key, value in environment.items()}


def volume_targets(service: dict[str, Any]) -> list[str]:
    """Container paths of the named volumes mounted in a service (short or long syntax)."""
    targets = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/", "~")):
                targets.append(target)
        elif volume.get("type") == "volume":
            targets.append(volume["target"])
    return targets


def passed_through(path: Path, service: str) -> set[str]:
    """Variables listed without a value in the compose file: passed only when set."""
    environment = raw_compose(path)["services"][service].get("environment") or {}
    if isinstance(environment, list):
        return {item for item in environment if "=" not in item}
    return {key for key, value in environment.items() if value is None}


def interpolated_names(path: Path) -> set[str]:
    """Names used as ${NAME...} in a compose file."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


# --- .env templates -----------------------------------------------------------------


@dataclass(frozen=True)
class EnvTemplate:
    values: dict[str, str]  # NAME=value lines
    documented_defaults: dict[str, str]  # "# NAME=value" lines

    @property
    def names(self) -> set[str]:
        return set(self.values) | set(self.documented_defaults)


def read_env_template(path: Path) -> EnvTemplate:
    values: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line):
            values[match.group(1)] = match.group(2)
        elif match := re.fullmatch(r"#\s?([A-Z][A-Z0-9_]*)=(.*)", line):
            defaults[match.group(1)] = match.group(2)
    return EnvTemplate(values, defaults)


def write_filled_env(template: Path, target: Path, replacements: dict[str, str | None]) -> Path:
    """A copy of an env template with some lines replaced (None: commented out)."""
    lines = []
    for line in template.read_text().splitlines():
        name = line.split("=", 1)[0].lstrip("#").strip()
        if "=" in line and name in replacements:
            value = replacements[name]
            lines.append(f"# {name}=" if value is None else f"{name}={value}")
        else:
            lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    return target


# --- settings classes ---------------------------------------------------------------


def load_class(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def settings_fields(service: PythonService) -> dict[str, tuple[Any, Any]]:
    """Environment variable name -> (pydantic FieldInfo, owning class) over the service's classes."""
    fields: dict[str, tuple[Any, Any]] = {}
    for spec in service.settings:
        cls = load_class(spec)
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            fields[f"{prefix}{name}".upper()] = (info, cls)
    return fields


# --- Dockerfiles --------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        """Substitute the global ARG defaults (what FROM lines may use)."""
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Joins continuation lines; drops comments, also those inside a continuation, as Docker does."""
    result: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(stripped)
        result.append((start, " ".join(part.strip() for part in current if part.strip())))
        current = []
    if current:
        result.append((start, " ".join(current)))
    return result


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            parts = arguments.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, []))
        elif not stages:
            if keyword != "ARG":
                raise AssertionError(f"{path.name}:{number}: {keyword} before the first FROM")
            key, _, value = arguments.partition("=")
            global_args[key] = value.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments, number))
    return Dockerfile(path, global_args, stages)


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY/ADD instruction (shell form)."""
    tokens = shlex.split(instruction.arguments)
    flags = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, tokens[:-1], tokens[-1]


def exec_form(arguments: str) -> list[str]:
    import json

    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def env_pairs(instruction: Instruction) -> dict[str, str]:
    tokens = shlex.split(instruction.arguments)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def image_environment(dockerfile: Path) -> dict[str, str]:
    """ENV of the final stage: what the running container has before compose adds its own."""
    environment: dict[str, str] = {}
    for instruction in parse_dockerfile(dockerfile).final.all("ENV"):
        environment.update(env_pairs(instruction))
    return environment


# --- .dockerignore ------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus **) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : zero or more directories
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.find("]", i)
            out += pattern[i : end + 1].replace("[!", "[^")
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern[str]], ...]  # (is_exception, regex)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((exception, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def excluded(self, relative: str) -> bool:
        """Last matching rule wins; a rule matching a parent directory matches what is inside."""
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for exception, regex in self.rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not exception
        return verdict


def source_files(directory: Path) -> list[str]:
    """Files under ``directory`` that git tracks or would track (not ignored), relative to the repo."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", str(directory.relative_to(REPO))],
        capture_output=True, text=True, cwd=REPO, check=True, timeout=30,
    )  # fmt: skip
    return [line for line in result.stdout.splitlines() if line and (REPO / line).is_file()]


# --- nginx --------------------------------------------------------------------------


def envsubst(template: str, environment: dict[str, str]) -> str:
    """What the official nginx image's entrypoint does with a template: replace $NAME and
    ${NAME} for the variables set in the container, and nothing else."""
    pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return environment[name] if name in environment else match.group(0)

    return pattern.sub(replace, template)


def template_placeholders(template: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template.read_text()))


def image_connection_budget(dockerfile: Path) -> tuple[int, int]:
    """``(worker_connections, worker_rlimit_nofile)`` that a gateway Dockerfile writes into
    the image's nginx.conf."""
    text = dockerfile.read_text()
    connections = re.search(r"worker_connections (\d+);", text)
    files = re.search(r"worker_rlimit_nofile (\d+);", text)
    if connections is None or files is None:
        raise AssertionError(f"{dockerfile.name} sets no connection budget")
    return int(connections[1]), int(files[1])


def official_image_nginx_conf(prefix: Path, conf_d: Path, dockerfile: Path = DEPLOY / "edge-nginx.Dockerfile") -> str:
    """The main configuration of the official nginx image (which includes conf.d/*.conf in
    http {}) as ``dockerfile`` changes it (the connection budget), with the temporary files
    moved into ``prefix`` so no root is needed. The pid file is given on the command line
    (``-g "pid ...;"``), as tests.support does."""
    connections, files = image_connection_budget(dockerfile)
    mime = Path("/etc/nginx/mime.types")
    types = f"include {mime};" if mime.exists() else "types { text/html html; application/javascript js; }"
    # The image's workers run as its nginx user; here they run as the test's user, which
    # owns the temporary directories (a root master would otherwise pick "nobody").
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
worker_rlimit_nofile {files};
error_log stderr notice;
events {{ worker_connections {connections}; }}
http {{
    {types}
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent';
    access_log {prefix}/access.log main;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {conf_d}/*.conf;
}}
"""
