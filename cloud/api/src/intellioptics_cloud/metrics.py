"""Prometheus metrics: one registry per app, so several apps (tests) never collide."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "intellioptics_cloud_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "intellioptics_cloud_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )


def route_template(request: Request) -> str:
    if request.scope.get("route") is None:
        return "unmatched"
    path = request.url.path
    for key, value in request.path_params.items():
        if isinstance(value, str) and value:
            path = path.replace(f"/{value}", f"/{{{key}}}", 1)
    return path


def install_metrics(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        # The route template, not the raw path: ids would explode the label set.
        name = route_template(request)
        metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        metrics.latency.labels(request.method, name).observe(time.perf_counter() - started)
        return response
