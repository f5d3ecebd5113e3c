"""Unit-test fixtures: the real app with the network replaced by httpx.MockTransport.

The fake inference service answers like the real one (same InferenceResult schema,
404 for detectors without a model): P(YES) is the image's mean brightness, so a white
image is a confident YES, a mid-grey one is a coin toss.
"""

from __future__ import annotations

import contextlib
import io
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio.from_thread
import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from intellioptics_common.schemas import InferenceResult, InferenceTimings
from intellioptics_edge.app import create_app
from intellioptics_edge.settings import EdgeSettings

TOKEN = "edgetoken_0123456789abcdefghij"
ACCOUNT_ID = 1  # the account the fake clouds report for their tokens
DET_BINARY = "det_" + "B" * 27
DET_NOCLOUD = "det_" + "N" * 27
DET_ESCALATE = "det_" + "E" * 27
DET_DISABLED = "det_" + "D" * 27
DET_NOMODEL = "det_" + "M" * 27
DET_MULTI = "det_" + "C" * 27


def jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def huge_png_header(width: int = 10_000, height: int = 10_000) -> bytes:
    """A tiny PNG file that declares 100 megapixels (IHDR only, one empty IDAT)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def base_config() -> dict:
    return {
        "global_config": {"refresh_rate": 60, "confident_audit_rate": 0.0},
        "edge_inference_configs": {
            "fast_escalation": {"always_return_edge_prediction": True, "min_time_between_escalations": 60}
        },
        "detectors": [
            {"detector_id": DET_BINARY, "edge_inference_config": "default", "name": "bright", "query": "Is it bright?"},
            {"detector_id": DET_NOCLOUD, "edge_inference_config": "no_cloud", "name": "nc", "query": "q?"},
            {"detector_id": DET_ESCALATE, "edge_inference_config": "fast_escalation", "name": "esc", "query": "q?"},
            {"detector_id": DET_DISABLED, "edge_inference_config": "disabled", "name": "off", "query": "q?"},
            {"detector_id": DET_NOMODEL, "edge_inference_config": "default", "name": "nomodel", "query": "q?"},
            {
                "detector_id": DET_MULTI,
                "name": "colour",
                "query": "Which colour?",
                "mode": "MULTI_CLASS",
                "class_names": ["red", "green", "blue"],
                "confidence_threshold": 0.5,
            },
        ],
    }


def fake_result(detector_id: str, image: bytes) -> InferenceResult:
    rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.float64)
    if detector_id == DET_MULTI:
        means = rgb.mean(axis=(0, 1)) + 1.0
        probs = means / means.sum()
        names = ["red", "green", "blue"]
    else:
        yes = float(rgb.mean() / 255.0)
        probs = np.array([1 - yes, yes])
        names = ["NO", "YES"]
    index = int(np.argmax(probs))
    return InferenceResult(
        detector_id=detector_id,
        mode="MULTI_CLASS" if detector_id == DET_MULTI else "BINARY",
        label=names[index],
        confidence=float(probs[index]),
        raw_primary_confidence=float(probs[index]),
        probabilities=dict(zip(names, map(float, probs), strict=True)),
        primary_model_version=3,
        primary_model_id="model-3",
        timings=InferenceTimings(decode_ms=1, preprocess_ms=1, model_ms=1, total_ms=3),
    )


class SyncClient:
    """A blocking client for an ASGI app, lifespan included (starlette's TestClient warns
    about httpx, and warnings are errors here)."""

    def __init__(self, app, stack: contextlib.ExitStack) -> None:
        self.app = app
        self._portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        stack.enter_context(self._portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge.test")
        stack.callback(lambda: self._portal.call(self._client.aclose))

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("PUT", url, **kwargs)


@dataclass
class FakeInference:
    calls: list[str] = field(default_factory=list)
    down: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/health/ready":
            return httpx.Response(200, json={"status": "ready"})
        if path == "/detectors":
            loaded = {"primary_model_version": 3, "oodd_model_version": None}
            listing = [{"detector_id": DET_BINARY, "state": "loaded", "loaded": loaded}]
            return httpx.Response(200, json={"models_dir": "/m", "cache_size": 5, "detectors": listing})
        if path.startswith("/detectors/"):
            detector_id = path.split("/")[2]
            return httpx.Response(404 if detector_id == DET_NOMODEL else 200, json={"detail": "x", "code": "x"})
        detector_id = request.url.params["detector_id"]
        self.calls.append(detector_id)
        if detector_id == DET_NOMODEL:
            return httpx.Response(404, json={"detail": "no model", "code": "model_not_found"})
        try:
            result = fake_result(detector_id, request.content)
        except OSError:
            return httpx.Response(400, json={"detail": "The JPEG image could not be decoded", "code": "invalid_image"})
        return httpx.Response(200, content=result.model_dump_json())


@dataclass
class Edge:
    client: SyncClient
    config_path: Path
    inference: FakeInference
    settings: EdgeSettings
    stop: Callable[[], None]  # ends the app's lifespan, as a restart does

    def submit(self, detector_id: str, image: bytes, *, token: str = TOKEN, **params: object) -> httpx.Response:
        return self.client.post(
            "/device-api/v1/image-queries",
            params={"detector_id": detector_id, **params},
            content=image,
            headers={"x-api-token": token, "content-type": "image/jpeg"},
        )

    @property
    def state(self):
        return self.client.app.state.edge


MakeEdge = Callable[..., Edge]


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it is true (background tasks run in the app's own thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def make_edge(tmp_path: Path) -> Iterator[MakeEdge]:
    stack = contextlib.ExitStack()

    def make(
        config: dict | None = None,
        cloud: Callable[[httpx.Request], httpx.Response] | None = None,
        streams: Callable[[httpx.Request], httpx.Response] | None = None,
        **overrides: object,
    ) -> Edge:
        config_path = tmp_path / "edge-config.yaml"
        config_path.write_text(yaml.safe_dump(config if config is not None else base_config()))
        values: dict = {
            "edge_data_dir": tmp_path / "data",
            "edge_config": config_path,
            "edge_tokens": TOKEN,
            "cloud_url": "http://cloud.test" if cloud else "",
            # The account of the fake clouds' tokens (their /me): whose edge this is.
            "edge_account_id": ACCOUNT_ID if cloud else None,
            "streams_url": "http://streams.test" if streams else "",
        }
        settings = EdgeSettings(**{**values, **overrides})
        inference = FakeInference()
        app = create_app(
            settings,
            inference_transport=httpx.MockTransport(inference.handle),
            cloud_transport=httpx.MockTransport(cloud) if cloud else None,
            streams_transport=httpx.MockTransport(streams) if streams else None,
        )
        own = stack.enter_context(contextlib.ExitStack())
        client = SyncClient(app, own)
        return Edge(client, config_path, inference, settings, own.close)

    with stack:
        yield make


@pytest.fixture
def edge(make_edge: MakeEdge) -> Edge:
    return make_edge()
