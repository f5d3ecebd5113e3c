"""The model updater against a fake registry (httpx.MockTransport): verified versions are
written, a wrong hash or a failed download changes nothing, a rollback becomes a new
local version with the old bytes, only the last two versions stay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from intellioptics_common.model_package import (
    InputSpec,
    PipelineConfig,
    list_versions,
    read_latest,
    sha256_bytes,
)
from intellioptics_edge.model_updater import ModelUpdater
from tests.support.edge_stack import brightness_model
from tests.support.hostile_models import external_data_model

DEVICE_TOKEN = "devicetoken_0123456789abcdefghij"
DETECTOR = "det_" + "U" * 27


def pipeline(kind: str) -> dict:
    return PipelineConfig(
        kind=kind, mode="BINARY", class_names=("NO", "YES"), input=InputSpec(height=32, width=32)
    ).to_dict()


@dataclass
class FakeRegistry:
    """Serves one active version (primary + OODD) the way the cloud's registry does."""

    binaries: dict[str, bytes] = field(default_factory=dict)
    active: str | None = None
    wrong_hash: bool = False
    broken_download: bool = False
    downloads: list[str] = field(default_factory=list)

    def add(self, version_id: str, gain: float) -> None:
        self.binaries[f"{version_id}-primary"] = brightness_model(("NO", "YES"), gain=gain)
        self.binaries[f"{version_id}-oodd"] = brightness_model(("NO", "YES"), gain=gain + 0.5)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/edge-api/v1/fetch-model-urls/"):
            assert request.headers["x-api-token"] == DEVICE_TOKEN
            if self.active is None:
                return httpx.Response(200, json={})
            info: dict = {}
            for kind, prefix in (("primary", ""), ("oodd", "oodd_")):
                binary_id = f"{self.active}-{kind}"
                digest = sha256_bytes(self.binaries[binary_id])
                info.update(
                    {
                        f"{prefix}model_binary_id": binary_id,
                        f"{prefix}model_binary_url": f"http://cloud.test/v1/model-binaries/{binary_id}?sig=1",
                        f"{prefix}model_binary_sha256": "0" * 64 if self.wrong_hash else digest,
                        f"{prefix}pipeline_config": pipeline(kind),
                        f"{prefix}predictor_metadata": {"trainer": "fast", "backbone_id": "b", "training_set_size": 8},
                    }
                )
            return httpx.Response(200, json=info)
        if path.startswith("/v1/model-binaries/"):
            binary_id = path.rsplit("/", 1)[1]
            self.downloads.append(binary_id)
            if self.broken_download:
                return httpx.Response(200, content=self.binaries[binary_id][:100])  # cut short
            return httpx.Response(200, content=self.binaries[binary_id])
        return httpx.Response(404, json={"detail": "no", "code": "not_found"})


def make_updater(registry: FakeRegistry, models_dir: Path) -> ModelUpdater:
    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(registry.handle))
    return ModelUpdater(client, DEVICE_TOKEN, models_dir, detector_ids=lambda: [DETECTOR], refresh_rate=lambda: 1.0)


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add("mv_1", gain=2.0)
    registry.add("mv_2", gain=3.0)
    return registry


def test_no_active_model_writes_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    assert asyncio.run(make_updater(registry, tmp_path).run_once()) == []
    assert not (tmp_path / DETECTOR).exists()


def test_writes_a_verified_version_once(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.active = "mv_1"
    updater = make_updater(registry, tmp_path)
    assert asyncio.run(updater.run_once()) == [DETECTOR]
    primary = read_latest(tmp_path, DETECTOR, "primary")  # sha256-verified read
    oodd = read_latest(tmp_path, DETECTOR, "oodd")
    assert primary is not None and oodd is not None
    assert primary.model_id == "mv_1-primary" and oodd.model_id == "mv_1-oodd"
    assert primary.model_bytes() == registry.binaries["mv_1-primary"]
    assert primary.metadata.trainer == "fast" and primary.metadata.detector_id == DETECTOR
    # Unchanged in the cloud: no second download, no new version.
    assert asyncio.run(updater.run_once()) == []
    assert registry.downloads == ["mv_1-primary", "mv_1-oodd"]
    assert list_versions(tmp_path, DETECTOR, "primary") == [1]


def test_a_wrong_hash_is_refused_and_nothing_changes(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.active = "mv_1"
    updater = make_updater(registry, tmp_path)
    asyncio.run(updater.run_once())
    registry.active, registry.wrong_hash = "mv_2", True
    assert asyncio.run(updater.run_once()) == []
    assert updater.counters.failures == 1 and "sha256" in (updater.counters.last_error or "")
    assert list_versions(tmp_path, DETECTOR, "primary") == [1]
    assert list_versions(tmp_path, DETECTOR, "oodd") == [1]  # the OODD (good hash... or not) waits too
    assert not [p for p in (tmp_path / DETECTOR / "primary").iterdir() if p.name.startswith(".")]


def test_a_truncated_download_changes_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.active, registry.broken_download = "mv_1", True
    updater = make_updater(registry, tmp_path)
    assert asyncio.run(updater.run_once()) == []
    assert list_versions(tmp_path, DETECTOR, "primary") == [] and updater.counters.failures == 1
    registry.broken_download = False
    assert asyncio.run(updater.run_once()) == [DETECTOR]  # the next cycle succeeds


def test_rollback_is_a_new_version_with_the_old_bytes_and_two_are_kept(registry: FakeRegistry, tmp_path: Path) -> None:
    updater = make_updater(registry, tmp_path)
    for active in ("mv_1", "mv_2", "mv_1"):
        registry.active = active
        assert asyncio.run(updater.run_once()) == [DETECTOR]
    assert list_versions(tmp_path, DETECTOR, "primary") == [2, 3]
    latest = read_latest(tmp_path, DETECTOR, "primary")
    assert latest is not None and latest.version == 3 and latest.model_id == "mv_1-primary"
    assert latest.model_bytes() == registry.binaries["mv_1-primary"]


def test_an_unreachable_cloud_is_counted_not_raised(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(base_url="http://cloud.test", transport=httpx.MockTransport(down))
    updater = ModelUpdater(client, DEVICE_TOKEN, tmp_path, detector_ids=lambda: [DETECTOR], refresh_rate=lambda: 1.0)
    assert asyncio.run(updater.run_once()) == []
    assert updater.counters.failures == 1 and "unreachable" in (updater.counters.last_error or "")


def test_a_download_with_external_data_is_refused_and_nothing_changes(registry: FakeRegistry, tmp_path: Path) -> None:
    """The cloud checks uploads, but the edge does not trust that: a binary whose tensors
    point at a file of this edge (right sha256 and all) is never installed."""
    registry.active = "mv_1"
    updater = make_updater(registry, tmp_path)
    asyncio.run(updater.run_once())
    registry.binaries["mv_3-primary"] = external_data_model("../../../data/run/admin-token")
    registry.binaries["mv_3-oodd"] = registry.binaries["mv_1-oodd"]
    registry.active = "mv_3"
    assert asyncio.run(updater.run_once()) == []
    assert updater.counters.failures == 1
    assert "external data" in (updater.counters.last_error or "")
    assert list_versions(tmp_path, DETECTOR, "primary") == [1] and list_versions(tmp_path, DETECTOR, "oodd") == [1]
    primary = read_latest(tmp_path, DETECTOR, "primary")
    assert primary is not None and primary.model_id == "mv_1-primary"
