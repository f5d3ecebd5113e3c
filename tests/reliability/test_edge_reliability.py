"""The edge through its nginx gateway: hostile input, token brute force, a corrupt or
mis-hashed model package, and the inference service killed (-9) under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from intellioptics_common.errors import PackageIntegrityError
from intellioptics_common.model_package import InputSpec, PipelineConfig, PredictorMetadata, write_version
from tests.reliability.helpers import EdgeProcesses, edge_processes, jpeg
from tests.reliability.hostile import SQL_METACHARACTERS, TRAVERSAL_IDS, hostile_images, nasty_valid_images
from tests.reliability.load import run_load
from tests.support.edge_stack import brightness_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTORS = [f"det_Reliability{i}Brightness00000" for i in range(2)]
MAX_FAILURES = 5
WINDOW_S = 3


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcesses]:
    extra = {"INTELLIOPTICS_AUTH_MAX_FAILURES": str(MAX_FAILURES), "INTELLIOPTICS_AUTH_FAILURE_WINDOW_S": str(WINDOW_S)}
    with edge_processes(tmp_path_factory.mktemp("edge-reliability"), DETECTORS, extra_env=extra) as stack:
        yield stack


def _submit(edge: EdgeProcesses, body: bytes, content_type: str = "image/jpeg", **params: str) -> httpx.Response:
    return httpx.post(
        f"{edge.gateway_url}/device-api/v1/image-queries",
        params={"detector_id": DETECTORS[0], **params},
        content=body,
        headers={"x-api-token": edge.token, "content-type": content_type},
        timeout=30,
    )


def _clear_4xx(response: httpx.Response, case: str, allowed: tuple[int, ...] = (400, 404, 413, 415)) -> None:
    assert response.status_code in allowed, f"{case}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert body.get("detail") and body.get("code"), f"{case}: {body}"


def test_hostile_images_through_nginx(edge: EdgeProcesses) -> None:
    assert _submit(edge, jpeg(230)).status_code == 201, "the stack does not answer a good image"
    tried = 0
    for name, body in hostile_images().items():
        for content_type in ("image/jpeg", "image/png", "image/webp"):
            _clear_4xx(_submit(edge, body, content_type), f"{name} as {content_type}", (400, 413, 415))
            tried += 1
    for name, body in nasty_valid_images().items():
        started = time.perf_counter()
        response = _submit(edge, body, "image/png")
        assert response.status_code in (201, 400, 413), f"{name}: {response.status_code}"
        assert time.perf_counter() - started < 10
    _clear_4xx(_submit(edge, jpeg(), "text/plain"), "text/plain body", (400, 415))
    over_edge_limit = jpeg() + b"\x00" * (17 * 1024 * 1024)  # past the edge API's 16 MB
    _clear_4xx(_submit(edge, over_edge_limit), "17 MB body", (413,))
    over_gateway_limit = jpeg() + b"\x00" * (25 * 1024 * 1024)  # past nginx's 20 MB
    _clear_4xx(_submit(edge, over_gateway_limit), "25 MB body", (413,))
    assert tried == 51
    assert _submit(edge, jpeg(230)).status_code == 201, "the edge stopped answering after hostile input"


def test_traversal_and_sql_metacharacters_in_ids(edge: EdgeProcesses) -> None:
    headers = {"x-api-token": edge.token}
    tried = 0
    with httpx.Client(base_url=edge.gateway_url, headers=headers, timeout=30) as http:
        for evil in (*TRAVERSAL_IDS, *SQL_METACHARACTERS):
            for method, path, kwargs in (
                ("POST", "/device-api/v1/image-queries", {"params": {"detector_id": evil}, "content": jpeg()}),
                ("GET", f"/device-api/v1/image-queries/{evil}", {}),
                ("GET", f"/device-api/v1/detectors/{evil}", {}),
                ("GET", "/device-api/v1/image-queries", {"params": {"detector_id": evil}}),
                ("GET", f"/edge-detector-readiness/{evil}", {}),
            ):
                response = http.request(method, path, headers={"content-type": "image/jpeg"}, **kwargs)
                tried += 1
                # Offline, an id the edge does not know goes to the (absent) cloud: 404 or 503 JSON.
                assert response.status_code in (200, 400, 404, 503), f"{method} {path}: {response.status_code}"
                if response.status_code >= 400:
                    assert response.json()["code"], response.text
                assert b"root:" not in response.content
    assert tried == 5 * (len(TRAVERSAL_IDS) + len(SQL_METACHARACTERS))
    assert not list(edge.data_dir.parent.rglob("passwd")), "a traversal id created a file"


def test_header_injection_and_oversized_metadata(edge: EdgeProcesses) -> None:
    injected = httpx.get(
        f"{edge.gateway_url}/device-api/v1/me",
        headers={"x-api-token": edge.token, "x-request-id": "abc%0d%0aSet-Cookie:%20pwned=1"},
        timeout=10,
    )
    assert injected.status_code == 200 and "set-cookie" not in injected.headers
    huge_header = httpx.get(
        f"{edge.gateway_url}/device-api/v1/me", headers={"x-api-token": edge.token, "x-junk": "j" * 20_000}, timeout=10
    )
    assert huge_header.status_code in (200, 400, 431)
    if huge_header.status_code >= 400:
        assert huge_header.json()["code"]
    for metadata in ('{"k": "' + "v" * 5000 + '"}', "not json", "[" * 2000 + "]" * 2000):
        _clear_4xx(_submit(edge, jpeg(230), metadata=metadata), f"metadata {metadata[:12]}", (400, 414))


def _client_from(address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (another loopback IP), so that the
    gateway sees a distinct client; uvicorn trusts only 127.0.0.1 as a proxy."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_token_brute_force_is_rate_limited_through_nginx(edge: EdgeProcesses) -> None:
    url = f"{edge.gateway_url}/device-api/v1/me"
    with _client_from("127.0.0.2") as attacker, _client_from("127.0.0.3") as bystander:
        codes = [
            attacker.get(url, headers={"x-api-token": f"wrong_token_{i:02d}_" + "x" * 20}).status_code
            for i in range(MAX_FAILURES)
        ]
        assert codes == [401] * MAX_FAILURES
        blocked = attacker.get(url, headers={"x-api-token": "wrong_token_next_" + "x" * 20})
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["code"] == "too_many_failed_attempts"
        retry_after = int(blocked.headers["retry-after"])
        assert 1 <= retry_after <= WINDOW_S
        # nginx appends the real peer to X-Forwarded-For: a forged first hop changes nothing.
        spoofed = attacker.get(url, headers={"x-api-token": edge.token, "x-forwarded-for": "198.51.100.9"})
        assert spoofed.status_code == 429, spoofed.text
        assert bystander.get(url, headers={"x-api-token": edge.token}).status_code == 200
        time.sleep(retry_after + 0.2)
        assert attacker.get(url, headers={"x-api-token": edge.token}).status_code == 200


def _inference_view(edge: EdgeProcesses, detector_id: str) -> dict:
    listing = httpx.get(f"{edge.inference_url}/detectors", timeout=10).json()
    return next(d for d in listing["detectors"] if d["detector_id"] == detector_id)


def _package(detector_id: str) -> dict:
    return {
        "pipeline": PipelineConfig(
            kind="primary", mode="BINARY", class_names=("NO", "YES"), input=InputSpec(height=32, width=32)
        ),
        "metadata": PredictorMetadata(
            detector_id=detector_id, kind="primary", trainer="test", backbone_id="none", training_set_size=0
        ),
    }


def _answers_with_v1_until(edge: EdgeProcesses, detector_id: str, refused: Callable[[dict], bool]) -> dict:
    """Keep asking while the watcher (2 s poll) looks at the new version; v1 must serve throughout."""
    deadline = time.monotonic() + 20
    while True:
        response = _submit(edge, jpeg(230), detector_id=detector_id)
        assert response.status_code == 201, response.text
        view = _inference_view(edge, detector_id)
        assert view["loaded"] and view["loaded"]["primary_model_version"] == 1, f"v1 was replaced: {view}"
        if refused(view):
            return view
        assert time.monotonic() < deadline, f"the bad version was never looked at: {view}"
        time.sleep(0.5)


def test_corrupt_and_mis_hashed_model_packages_are_refused(edge: EdgeProcesses) -> None:
    detector_id = DETECTORS[1]
    assert _inference_view(edge, detector_id)["loaded"]["primary_model_version"] == 1
    # A download whose bytes do not match the sha256 the cloud announced: refused before it is visible.
    with pytest.raises(PackageIntegrityError):
        write_version(
            edge.models_dir, detector_id, "primary", model_bytes=brightness_model(("NO", "YES")),
            expected_sha256="0" * 64, model_id="wrong-hash", **_package(detector_id),
        )  # fmt: skip
    assert not (edge.models_dir / detector_id / "primary" / "2").exists()
    # A version that arrived whole, then was corrupted on disk: its sha256 manifest no longer matches.
    path = write_version(
        edge.models_dir, detector_id, "primary", model_bytes=brightness_model(("NO", "YES")),
        model_id="corrupted-later", **_package(detector_id),
    )  # fmt: skip
    (path / "model.buf").write_bytes(b"\x08\x01garbage, not ONNX")
    view = _answers_with_v1_until(edge, detector_id, lambda v: bool(v["refused_versions"]))
    assert any("sha256" in reason for reason in view["refused_versions"]), view
    # Then a version with a true manifest whose model is not ONNX (this also prunes v1 from
    # disk, keeping the last two): nothing valid on disk, and the loaded v1 keeps serving.
    write_version(
        edge.models_dir, detector_id, "primary", model_bytes=b"not an onnx graph",
        model_id="not-onnx", **_package(detector_id),
    )  # fmt: skip
    _answers_with_v1_until(edge, detector_id, lambda v: bool(v["refused_reason"]) or len(v["refused_versions"]) >= 2)


def test_inference_killed_under_load_gives_fast_503_and_recovers(edge: EdgeProcesses) -> None:
    stop = threading.Event()
    outcome: dict = {}

    def load() -> None:
        outcome["result"] = run_load(edge.gateway_url, edge.token, DETECTORS[:1], clients=4, duration_s=30, stop=stop)

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(2)
    killed_at = time.monotonic()
    edge.inference.kill()
    time.sleep(3)
    restarted_at = time.monotonic()
    edge.restart(edge.inference, f"{edge.inference_url}/health/live")
    recovered_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _submit(edge, jpeg(230)).status_code == 201:
            recovered_at = time.monotonic()
            break
        time.sleep(0.1)
    time.sleep(1)
    stop.set()
    worker.join(60)
    result = outcome["result"]
    during = [s for s in result.samples if killed_at <= s.started < restarted_at]
    assert during, "no request was made while the inference service was down"
    assert all(s.status == 503 or s.status == 201 for s in during), result.statuses()
    refused = [s for s in during if s.status == 503]
    assert refused and all(s.code == "model_not_ready" for s in refused), {s.code for s in refused}
    slowest = max(s.seconds for s in during)
    assert slowest < 1.0, f"a request took {slowest:.2f} s while inference was down"
    assert recovered_at is not None, "the edge did not recover after the inference service came back"
    assert 0 not in result.statuses() and 500 not in result.statuses(), result.statuses()
    print(
        f"inference kill: {len(during)} requests while down ({len(refused)} x 503), slowest {slowest * 1000:.0f} ms, "
        f"recovered {recovered_at - restarted_at:.1f} s after restart; totals {dict(result.statuses())}"
    )
