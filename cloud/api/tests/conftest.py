"""Fixtures for the cloud API tests.

Every API test runs twice: on SQLite and on a real PostgreSQL 15 cluster that the suite
starts in a temp dir on a free port. Each test gets a fresh database, copied from one
migrated template (``CREATE DATABASE ... TEMPLATE`` / a file copy), so tests stay fast
and still exercise the real migrations.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio.from_thread
import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from sqlalchemy import create_engine, text

from intellioptics_cloud.app import create_app
from intellioptics_cloud.db import make_engine, run_migrations
from intellioptics_cloud.models import CLOCK, Clock
from intellioptics_cloud.settings import CloudSettings
from tests.support.procs import PostgresCluster, postgres_cluster

BOOTSTRAP_TOKEN = "io_bootstraptesttoke_0123456789abcdefghij"
BACKENDS = ("sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration]))


# --- databases ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresCluster]:
    # Not under pytest's tmp dir: that one is 0700 root, and PostgreSQL runs as 'nobody' under root.
    base = Path(tempfile.mkdtemp(prefix="io-cloud-pg-"))
    base.chmod(0o755)
    try:
        with postgres_cluster(base / "cluster") as cluster:
            yield cluster
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_database(pg: PostgresCluster) -> str:
    """One migrated database for the session; each test starts from empty tables."""
    url = pg.create_database("io_cloud_tests")
    engine = make_engine(url)
    run_migrations(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "cloud.db"
    engine = make_engine(f"sqlite:///{path}")
    run_migrations(engine)
    engine.dispose()
    return path


def empty_postgres(url: str) -> str:
    """TRUNCATE is far cheaper than a new database per test on a shared 2-core machine."""
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename != 'alembic_version'")
        ).scalars()
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return empty_postgres(request.getfixturevalue("pg_database"))
    target = tmp_path / "db" / "cloud.db"
    target.parent.mkdir()
    shutil.copy(request.getfixturevalue("sqlite_template"), target)
    return f"sqlite:///{target}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> CloudSettings:
    return CloudSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        bootstrap_token=BOOTSTRAP_TOKEN,
        environment="test",
        secret_key="test-secret-key-0123456789",
        review_lock_s=120,
    )


# --- API client ---------------------------------------------------------------------


class SyncClient:
    """A blocking httpx client on the ASGI app with its lifespan (starlette's TestClient
    warns about httpx, and warnings are errors here)."""

    def __init__(self, app: Any, stack: contextlib.ExitStack) -> None:
        self.app = app
        self._portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        stack.enter_context(self._portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://cloud.test"
        )
        stack.callback(lambda: self._portal.call(self._client.aclose))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@dataclass
class Api:
    """A TestClient bound to one token (``x-api-token``)."""

    client: SyncClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-token": self.token}

    def request(self, method: str, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.request("DELETE", path, **kwargs)

    def as_token(self, token: str) -> Api:
        return Api(self.client, token)

    def new_token(self, role: str, name: str | None = None) -> Api:
        response = self.post("/v1/tokens", json={"name": name or f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
        assert response.status_code == 201, response.text
        return self.as_token(response.json()["token"])

    def create_detector(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"name": name or f"det-{uuid.uuid4().hex[:8]}", "query": "Is the part bright?", **fields}
        response = self.post("/v1/detectors", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, detector_id: str, image: bytes, **params: Any):  # type: ignore[no-untyped-def]
        return self.post(
            "/v1/image-queries",
            params={"detector_id": detector_id, **params},
            content=image,
            headers={"content-type": "image/jpeg"},
        )


@pytest.fixture
def client(settings: CloudSettings) -> Iterator[SyncClient]:
    with contextlib.ExitStack() as stack:
        yield SyncClient(create_app(settings), stack)


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The cloud's clock, to move on past a lease or a claim instead of sleeping."""
    CLOCK.reset()
    yield CLOCK
    CLOCK.reset()


@pytest.fixture
def make_api() -> Iterator[Callable[[CloudSettings], Api]]:
    """Start another app (other settings) and get its bootstrap admin."""
    with contextlib.ExitStack() as stack:
        yield lambda app_settings: Api(SyncClient(create_app(app_settings), stack), BOOTSTRAP_TOKEN)


@pytest.fixture
def admin(client: SyncClient) -> Api:
    return Api(client, BOOTSTRAP_TOKEN)


@pytest.fixture
def other_account(admin: Api) -> Api:
    """The admin of a second account, for isolation tests."""
    response = admin.post("/v1/accounts", json={"name": f"acct-{uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.text
    return admin.as_token(response.json()["admin_token"])


# --- images and models --------------------------------------------------------------


def make_jpeg(brightness: int = 200, size: tuple[int, int] = (64, 48), noise: int = 0) -> bytes:
    rng = np.random.default_rng(brightness * 7 + noise)
    pixels = np.full((size[1], size[0], 3), brightness, dtype=np.int16)
    if noise:
        pixels += rng.integers(-noise, noise + 1, size=pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def jpeg() -> Callable[..., bytes]:
    return make_jpeg


INPUT_SIZE = 32


def brightness_model(num_classes: int = 2, sharpness: float = 12.0) -> bytes:
    """A real ONNX classifier: mean brightness -> softmax. Bright means the LAST class
    (YES for binary), dark the first; mid-grey is unsure."""
    mean = helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[1, 2, 3], keepdims=0)
    weights = np.linspace(-sharpness, sharpness, num_classes, dtype=np.float32).reshape(1, num_classes)
    nodes = [
        mean,
        helper.make_node("Reshape", ["pooled", "shape"], ["column"]),
        helper.make_node("MatMul", ["column", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, num_classes])],
        initializer=[
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
            helper.make_tensor("weights", TensorProto.FLOAT, [1, num_classes], weights.flatten().tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def constant_oodd_model(in_domain: float) -> bytes:
    """An OODD graph that scores every image ``in_domain``."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["pooled", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "score"], ["in_domain"]),
    ]
    graph = helper.make_graph(
        nodes,
        "oodd",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("in_domain", TensorProto.FLOAT, [1])],
        initializer=[
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("score", TensorProto.FLOAT, [1], [in_domain]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def pipeline_config(kind: str, class_names: list[str], mode: str = "BINARY") -> dict[str, Any]:
    return {
        "kind": kind,
        "mode": mode,
        "class_names": class_names,
        "input": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "output": "probabilities" if kind == "primary" else "in_domain",
    }


def upload_model(
    api: Api,
    detector_id: str,
    class_names: list[str] | None = None,
    *,
    activate: bool = True,
    oodd_score: float | None = None,
    metrics: dict[str, Any] | None = None,
    mode: str = "BINARY",
):  # type: ignore[no-untyped-def]
    names = class_names or ["NO", "YES"]
    manifest: dict[str, Any] = {
        "primary_pipeline_config": pipeline_config("primary", names, mode),
        "primary_metadata": {"trainer": "test"},
        "metrics": metrics or {"balanced_accuracy": 0.9},
        "training_set_size": 10,
        "class_counts": dict.fromkeys(names, 5),
        "trainer": "test",
        "activate": activate,
    }
    files = {"primary": ("model.buf", brightness_model(len(names)), "application/octet-stream")}
    if oodd_score is not None:
        manifest["oodd_pipeline_config"] = pipeline_config("oodd", ["in_domain"], mode)
        manifest["oodd_metadata"] = {"trainer": "test"}
        files["oodd"] = ("model.buf", constant_oodd_model(oodd_score), "application/octet-stream")
    return api.post(f"/v1/detectors/{detector_id}/models", files=files, data={"manifest": json.dumps(manifest)})


def count_rows(settings: CloudSettings, table: str) -> int:
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        value = connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(value)


def blob_files(settings: CloudSettings) -> list[Path]:
    root = settings.resolved_blob_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def helpers() -> SimpleNamespace:
    """Plain helper functions (test modules cannot import conftest under importlib mode)."""
    return SimpleNamespace(
        jpeg=make_jpeg,
        upload_model=upload_model,
        brightness_model=brightness_model,
        constant_oodd_model=constant_oodd_model,
        pipeline_config=pipeline_config,
        count_rows=count_rows,
        blob_files=blob_files,
    )
