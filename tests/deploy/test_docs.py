"""docs/configuration.md against the code: every variable of every service, with its default."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter

from tests.deploy.deployment import (
    CLOUD_COMPOSE,
    EDGE_COMPOSE,
    NGINX_SERVICES,
    PYTHON_SERVICES,
    REPO,
    PythonService,
    load_class,
    raw_compose,
    template_placeholders,
)

DOC = (REPO / "docs" / "configuration.md").read_text()


def section(title_part: str) -> str:
    for part in DOC.split("\n## "):
        if title_part in part.splitlines()[0]:
            return part
    raise AssertionError(f"docs/configuration.md has no section for {title_part}")


def rows(text: str) -> dict[str, list[str]]:
    """First cell (`NAME`) -> the other cells of each table row."""
    result = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and (match := re.fullmatch(r"`([A-Z0-9_]+)`", cells[0])):
            result[match.group(1)] = cells[1:]
    return result


@pytest.mark.parametrize("service", PYTHON_SERVICES, ids=lambda s: s.name)
def test_every_setting_is_documented_with_its_default(service: PythonService) -> None:
    table = rows(section(service.settings[0].split(":")[1]))
    variables = set()
    for spec in service.settings:
        cls = load_class(spec)
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            variable = f"{prefix}{name}".upper()
            variables.add(variable)
            assert variable in table, f"{variable} ({spec}) is not in docs/configuration.md"
            documented = table[variable][0]
            if info.default_factory is not None:
                continue  # computed defaults are described in words
            if documented == "*unset*":
                assert info.default is None, f"{variable}: documented unset, default {info.default!r}"
            elif documented == "*empty*":
                assert info.default == "", f"{variable}: documented empty, default {info.default!r}"
            else:
                match = re.fullmatch(r"`([^`]*)`", documented)
                assert match, f"{variable}: default cell {documented!r} is not `value`, *unset* or *empty*"
                assert TypeAdapter(info.annotation).validate_python(match.group(1)) == info.default, variable
    assert not set(table) - variables, f"rows of variables that do not exist: {set(table) - variables}"


@pytest.mark.parametrize("template", sorted(NGINX_SERVICES.values()), ids=lambda p: p.parent.parent.name)
def test_every_gateway_placeholder_is_documented(template) -> None:  # type: ignore[no-untyped-def]
    table = rows(section(template.name))
    assert set(table) == template_placeholders(template)


def test_operations_commands_name_real_services_and_volumes() -> None:
    """The commands in docs/operations.md use the services and volumes the compose files define."""
    text = (REPO / "docs" / "operations.md").read_text()
    compose = {"cloud": raw_compose(CLOUD_COMPOSE), "edge": raw_compose(EDGE_COMPOSE)}
    volumes = re.findall(r"intellioptics-(cloud|edge)_([a-z-]+)", text)
    assert volumes
    for side, volume in volumes:
        assert volume in compose[side]["volumes"] or volume == "default", (
            f"no volume {volume} in the {side} compose file"
        )
    services = re.findall(
        r"io-(cloud|edge)(?: --profile \w+)? (?:exec -T|run --rm(?: --no-deps)?(?: -u root)?(?: -v \S+)?|logs(?: -f)?|restart|stop) ([a-z-]+)",
        text,
    )
    assert len(services) >= 8
    for side, service in services:
        assert service in compose[side]["services"], f"io-{side} … {service}: no such service"
    for path in re.findall(r"(?:deploy|docs)/[A-Za-z0-9_./-]+\.(?:yml|md|example|Dockerfile)", text):
        assert (REPO / path).exists(), path
