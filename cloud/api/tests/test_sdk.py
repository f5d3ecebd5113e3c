"""The real groundlight SDK 1.3.1 against a real cloud API process (uvicorn started as
``python -m intellioptics_cloud``), on PostgreSQL and on SQLite."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from groundlight import EdgeNotAvailableError, ExperimentalApi, Groundlight
from groundlight_openapi_client.exceptions import ApiException, OpenApiException
from PIL import Image

from tests.support.procs import free_port, python_module, running, wait_http

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The SDK itself leaves the image file it reads from a path open (groundlight/images.py).
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def server(tmp_path: Path, database_url: str, helpers) -> Iterator[tuple[str, str]]:
    port = free_port()
    token = "io_sdktestbootstrap0_" + uuid.uuid4().hex
    env = {
        "INTELLIOPTICS_DATA_DIR": str(tmp_path / "data"),
        "INTELLIOPTICS_DATABASE_URL": database_url,
        "INTELLIOPTICS_BOOTSTRAP_TOKEN": token,
        "INTELLIOPTICS_CLOUD_PORT": str(port),
        "INTELLIOPTICS_SECRET_KEY": "sdk-test-secret-key",
        "INTELLIOPTICS_LOG_LEVEL": "WARNING",
    }
    process = python_module("cloud-api", "intellioptics_cloud", tmp_path / "logs", env)
    with running(process):
        wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=60, process=process)
        yield f"http://127.0.0.1:{port}", token


def test_the_groundlight_sdk_works_end_to_end(server, helpers, tmp_path: Path) -> None:
    endpoint, token = server
    gl = Groundlight(endpoint=endpoint, api_token=token)  # token check, by-snippet, /me twice
    assert gl.whoami().endswith(".intellioptics.local")

    binary = gl.create_detector(name="door", query="Is the door open?", confidence_threshold=0.8)
    assert binary.id.startswith("det_") and binary.mode == "BINARY"
    same = gl.get_or_create_detector(name="door", query="Is the door open?", confidence_threshold=0.8)
    assert same.id == binary.id
    with pytest.raises(ValueError):
        gl.get_or_create_detector(name="door", query="A different question?")
    multi = gl.create_multiclass_detector(name="color", query="Which color?", class_names=["red", "green", "blue"])
    assert multi.mode == "MULTI_CLASS" and multi.mode_configuration["class_names"] == ["red", "green", "blue"]
    created = gl.get_or_create_detector(name="fresh", query="New one?")
    assert gl.get_detector_by_name("fresh").id == created.id
    assert gl.get_detector(binary.id).name == "door"
    listed = gl.list_detectors(page=1, page_size=10)
    assert {d.id for d in listed.results} == {binary.id, multi.id, created.id} and listed.count == 3

    gl.update_detector_confidence_threshold(binary.id, 0.75)
    assert gl.get_detector(binary.id).confidence_threshold == pytest.approx(0.75)

    # No model yet: the query waits for a person (STILL_PROCESSING), exactly as the SDK expects.
    iq = gl.submit_image_query(binary, helpers.jpeg(200), wait=0, human_review="ALWAYS")
    assert iq.id.startswith("iq_") and iq.result.source == "STILL_PROCESSING"
    pil = Image.new("RGB", (80, 60), (10, 200, 30))
    iq_async = gl.ask_async(multi, pil)
    array_iq = gl.submit_image_query(binary, np.zeros((40, 40, 3), dtype=np.uint8), wait=0, metadata={"line": 7})
    assert array_iq.metadata == {"line": 7}
    path = tmp_path / "part.jpg"
    path.write_bytes(helpers.jpeg(30))
    file_iq = gl.submit_image_query(binary, str(path), wait=0, inspection_id="insp-1")

    gl.add_label(iq, "YES")
    gl.add_label(iq_async.id, "green")
    answered = gl.get_image_query(iq.id)
    assert getattr(answered.result.label, "value", answered.result.label) == "YES"
    assert answered.result.confidence == 1.0 and answered.result.source == "USER"
    assert gl.get_image_query(iq_async.id).result.label == "green"
    with pytest.raises(Exception, match="404|not found|Not Found"):
        gl.add_label("iq_doesnotexist0000000000000", "YES")

    page = gl.list_image_queries(page=1, page_size=2)
    assert page.count == 4 and len(page.results) == 2
    for_binary = gl.list_image_queries(page=1, page_size=10, detector_id=binary.id)
    assert {q.id for q in for_binary.results} == {iq.id, array_iq.id, file_iq.id}
    image = gl.get_image(iq.id)  # the SDK's generated client hands back an open temp file
    try:
        assert Image.open(io.BytesIO(image.read())).size == (64, 48)
    finally:
        image.close()

    # With an active, confident model the cloud answers at once (ask_ml / ask_confident).
    admin = httpx.Client(base_url=endpoint, headers={"x-api-token": token})
    assert helpers.upload_model(_HttpxApi(admin), binary.id).status_code == 201
    confident = gl.ask_confident(binary, helpers.jpeg(250), wait=5)
    assert confident.result.label == "YES" and confident.result.confidence >= 0.75
    assert confident.result.source == "ALGORITHM"
    ml = gl.ask_ml(binary, helpers.jpeg(5))
    assert ml.result.label == "NO"

    gl.delete_detector(created)
    with pytest.raises(Exception, match="404|not found|Not Found"):
        gl.get_detector(created.id)
    assert gl.list_detectors().count == 2
    admin.close()


def test_download_mlbinary_with_a_model_and_without_one(server, helpers, tmp_path: Path) -> None:
    """Was: a detector without a model got ``null`` fields, which SDK 1.3.1's generated
    client refuses (ApiTypeError). They are left out (200, as Groundlight's edge endpoint
    and ours read "no binary yet"), and a model's binaries download as the SDK names them."""
    endpoint, token = server
    gl = ExperimentalApi(endpoint=endpoint, api_token=token)
    modelled = gl.create_detector(name="modelled", query="Modelled?")
    empty = gl.create_detector(name="empty", query="Empty?")
    with httpx.Client(base_url=endpoint, headers={"x-api-token": token}) as admin:
        assert helpers.upload_model(_HttpxApi(admin), modelled.id, oodd_score=0.9).status_code == 201
        (version,) = admin.get(f"/v1/detectors/{modelled.id}/models").json()

    out = tmp_path / "modelled"
    out.mkdir()
    gl.download_mlbinary(modelled, str(out))
    info = gl._download_mlbinary_url(modelled)
    written = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in out.iterdir()}
    assert written == {
        info.model_binary_id: version["primary_sha256"],
        info.oodd_model_binary_id: version["oodd_sha256"],
    }

    nothing = gl._download_mlbinary_url(empty)  # parsed, no ApiTypeError
    assert (nothing.model_binary_id, nothing.model_binary_url, nothing.oodd_model_binary_url) == (None, None, None)
    none_out = tmp_path / "empty"
    none_out.mkdir()
    # SDK 1.3.1 has no branch for a detector without binaries: it joins output_dir with the
    # missing id (a plain TypeError) before it downloads anything. The wire is not the cause.
    with pytest.raises(TypeError) as raised:
        gl.download_mlbinary(empty, str(none_out))
    assert not isinstance(raised.value, OpenApiException), raised.value
    assert not any(none_out.iterdir())


def test_missing_routes_are_404_and_wrong_methods_405_naming_every_method(server) -> None:
    """The cloud without the web UI (as deployed: nginx serves it). Was: the ``Allow`` of a
    405 named only the first route at the path (``PUT .../models``: GET, not POST)."""
    endpoint, token = server
    gl = ExperimentalApi(endpoint=endpoint, api_token=token)
    detector = gl.create_detector(name="routes", query="Routes?")
    # SDK calls of Groundlight features IntelliOptics does not have, and the edge helpers.
    for call in (lambda: gl.create_note(detector.id, "a note"), lambda: gl.reset_detector(detector.id)):
        with pytest.raises((ApiException, requests.HTTPError)) as raised:
            call()
        status = getattr(raised.value, "status", None) or raised.value.response.status_code  # type: ignore[union-attr]
        assert status == 404, raised.value
    with pytest.raises(EdgeNotAvailableError):
        gl.edge.get_config()

    headers = {"x-api-token": token}
    for method, path in (("POST", "/v1/nothing"), ("GET", "/edge-api/v1/image-queries"), ("DELETE", "/nothing")):
        missing = httpx.request(method, f"{endpoint}{path}", headers=headers)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", (method, path, missing.text)
    for method, path, allowed in (
        ("GET", "/device-api/v1/labels", {"POST"}),
        ("GET", "/v1/review/claim", {"POST"}),
        ("PUT", f"/v1/detectors/{detector.id}/models", {"GET", "POST"}),
        ("DELETE", "/device-api/v1/image-queries", {"GET", "POST"}),
        ("POST", "/v1/me", {"GET"}),
    ):
        wrong = httpx.request(method, f"{endpoint}{path}", headers=headers)
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed", (method, path, wrong.text)
        assert {m.strip() for m in wrong.headers["allow"].split(",")} - {"HEAD"} == allowed, (path, wrong.headers)


class _HttpxApi:
    """The tiny part of the in-process ``Api`` that ``helpers.upload_model`` uses."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return self._client.post(path, **kwargs)
