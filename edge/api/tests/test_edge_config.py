"""edge-config.yaml: validation messages, reload on change, atomic PUT, SDK compatibility."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from groundlight.edge.config import EdgeEndpointConfig

from intellioptics_common.errors import ConfigError
from intellioptics_edge.edge_config import EdgeConfigManager, parse_edge_config, parse_edge_config_yaml

from .conftest import DET_BINARY, DET_DISABLED, TOKEN, Edge, MakeEdge, base_config, jpeg

AUTH = {"x-api-token": TOKEN}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["detectors"][0].update(detector_id="det_short"), "detectors.0.detector_id"),
        (lambda c: c["detectors"][0].update(edge_inference_config="nope"), "detectors.0.edge_inference_config"),
        (lambda c: c["global_config"].update(refresh_rate=0), "global_config.refresh_rate"),
        (lambda c: c["global_config"].update(confident_audit_rte=0.1), "global_config.confident_audit_rte"),
        (lambda c: c["detectors"].append(dict(c["detectors"][0])), "listed twice"),
        (lambda c: c["detectors"][0].update(mode="MULTI_CLASS"), "class_names is required"),
        (
            lambda c: c["edge_inference_configs"].update(bad={"disable_cloud_escalation": True}),
            "edge_inference_configs.bad",
        ),
    ],
)
def test_invalid_config_names_the_bad_field(change, named: str) -> None:
    config = base_config()
    change(config)
    with pytest.raises(ConfigError) as caught:
        parse_edge_config(config)
    assert named in caught.value.public_message


def test_bad_yaml_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_edge_config_yaml("detectors: [unclosed")


def test_presets_always_exist_and_unlisted_detectors_use_default() -> None:
    config = parse_edge_config({})
    assert set(config.edge_inference_configs) >= {"default", "edge_answers_with_escalation", "no_cloud", "disabled"}
    assert config.inference_config_for(DET_BINARY) == config.edge_inference_configs["default"]


def test_file_change_is_picked_up_and_a_bad_file_keeps_the_last_good_one(tmp_path) -> None:
    path = tmp_path / "edge-config.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    manager = EdgeConfigManager(path)
    assert manager.current().entry(DET_BINARY).edge_inference_config == "default"

    changed = base_config()
    changed["detectors"][0]["edge_inference_config"] = "no_cloud"
    path.write_text(yaml.safe_dump(changed))
    os.utime(path, (time.time() + 5, time.time() + 5))
    manager._next_check = 0  # skip the once-a-second throttle
    assert manager.current().entry(DET_BINARY).edge_inference_config == "no_cloud"

    path.write_text("detectors: [unclosed")
    os.utime(path, (time.time() + 10, time.time() + 10))
    manager._next_check = 0
    assert manager.current().entry(DET_BINARY).edge_inference_config == "no_cloud"
    assert "not valid YAML" in manager.state.error


def test_get_edge_config_parses_in_the_sdk(edge: Edge) -> None:
    response = edge.client.get("/edge-config", headers=AUTH)
    assert response.status_code == 200
    parsed = EdgeEndpointConfig.from_payload(response.json())
    assert {d.detector_id for d in parsed.detectors} >= {DET_BINARY, DET_DISABLED}
    assert parsed.edge_inference_configs["no_cloud"].disable_cloud_escalation is True


def test_put_validates_writes_atomically_and_keeps_offline_metadata(edge: Edge) -> None:
    before = edge.config_path.read_text()
    bad = edge.client.put("/edge-config", json={"detectors": [{"detector_id": "det_x"}]}, headers=AUTH)
    assert bad.status_code == 400
    assert "detectors.0.detector_id" in bad.json()["detail"]
    assert edge.config_path.read_text() == before
    assert edge.client.put("/edge-config", content=b"{not json", headers=AUTH).status_code == 400

    # What the SDK sends: Groundlight fields only; our metadata must survive.
    sdk_payload = EdgeEndpointConfig.from_payload(edge.client.get("/edge-config", headers=AUTH).json()).to_payload()
    for detector in sdk_payload["detectors"]:
        if detector["detector_id"] == DET_DISABLED:
            detector["edge_inference_config"] = "default"
    put = edge.client.put("/edge-config", json=sdk_payload, headers=AUTH)
    assert put.status_code == 200, put.text
    on_disk = yaml.safe_load(edge.config_path.read_text())
    entry = next(d for d in on_disk["detectors"] if d["detector_id"] == DET_BINARY)
    assert entry["query"] == "Is it bright?"
    # The change serves at once: the disabled detector now answers.
    assert edge.submit(DET_DISABLED, jpeg(255)).status_code == 201


def test_edge_routes_need_a_token(edge: Edge) -> None:
    assert edge.client.get("/edge-config").status_code == 401
    assert edge.client.put("/edge-config", json={}).status_code == 401


def test_readiness_reports_configured_detectors(make_edge: MakeEdge) -> None:
    edge = make_edge()
    readiness = edge.client.get("/edge-detector-readiness", headers=AUTH).json()
    assert readiness[DET_BINARY] == {"ready": True}
    from .conftest import DET_NOMODEL

    assert readiness[DET_NOMODEL] == {"ready": False}
    assert edge.client.get("/health/live").json() == {"status": "alive"}
    assert edge.client.get("/health/ready").status_code == 200


def test_the_example_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "edge-config.example.yaml"
    config = parse_edge_config_yaml(example.read_text(), str(example))
    assert len(config.detectors) == 2
    assert config.inference_config_for(config.detectors[1].detector_id).always_return_edge_prediction


@pytest.mark.parametrize("body", [b"null", b"{}", b'{"detectors": []}', b'{"global_config": {"refresh_rate": 30}}'])
def test_put_refuses_a_config_that_removes_every_detector_unless_asked(edge: Edge, body: bytes) -> None:
    before = edge.config_path.read_text()
    refused = edge.client.put("/edge-config", content=body, headers=AUTH)
    assert refused.status_code == 400, refused.text
    assert "allow_empty=true" in refused.json()["detail"]
    assert edge.config_path.read_text() == before
    assert edge.submit(DET_BINARY, jpeg(255)).status_code == 201  # still configured and answering
    allowed = edge.client.put("/edge-config", params={"allow_empty": "true"}, content=body, headers=AUTH)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["detectors"] == [] and yaml.safe_load(edge.config_path.read_text())["detectors"] == []
    # Nothing left to remove: an empty list is no accident any more, but null / {} still are.
    again = edge.client.put("/edge-config", content=body, headers=AUTH)
    assert again.status_code == (400 if body in (b"null", b"{}") else 200), again.text


@pytest.mark.parametrize("depth", [40, 900, 100_000])
def test_put_refuses_deeply_nested_json_with_a_400(edge: Edge, depth: int) -> None:
    before = edge.config_path.read_text()
    body = '{"global_config":' + "[" * depth + "]" * depth + "}"
    response = edge.client.put("/edge-config", content=body.encode(), headers=AUTH)
    assert response.status_code == 400, response.text[:200]
    assert "nested more than 32 levels" in response.json()["detail"]
    assert edge.config_path.read_text() == before


def test_put_refuses_a_body_over_one_mebibyte(edge: Edge) -> None:
    current = edge.client.get("/edge-config", headers=AUTH).json()
    padded = json.dumps(current) + " " * (1024 * 1024)  # valid JSON, just too big
    response = edge.client.put("/edge-config", content=padded.encode(), headers=AUTH)
    assert response.status_code == 400 and "over 1048576 bytes" in response.json()["detail"]


def test_every_edge_response_sends_the_shared_security_headers(edge: Edge) -> None:
    """The /status page is HTML a browser opens: no framing, no sniffing, no referrer, as the cloud."""
    from intellioptics_common.security_headers import SECURITY_HEADERS

    for response in (
        edge.client.get("/status"),
        edge.client.get("/status.json"),
        edge.client.get("/edge-config"),  # 401
        edge.client.get("/no-such-page"),  # 404
    ):
        for name, value in SECURITY_HEADERS:
            assert response.headers[name.decode()] == value.decode(), (response.url, name)
    assert edge.client.get("/status").headers["content-type"].startswith("text/html")
