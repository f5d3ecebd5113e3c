"""Reading a Prometheus text page in tests and benches: one parser for all of them."""

from __future__ import annotations

import re

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with exactly ``labels`` (any order); None if absent."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name and not labels:
            return float(value)
        if series.startswith(name + "{") and dict(_LABEL.findall(series[len(name) :])) == labels:
            return float(value)
    return None


def metric_total(text: str, name: str) -> float:
    """The sum over every series of ``name``."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
    )
