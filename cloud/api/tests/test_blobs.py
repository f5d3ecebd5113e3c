"""Blob stores: the filesystem and Azure Blob Storage (against a real Azurite from npm)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from intellioptics_cloud.blobs import AzureBlobStore, BlobStore, FilesystemBlobStore
from intellioptics_common.errors import NotFoundError, ServiceUnavailableError
from tests.support.azurite import azurite_blob


@pytest.fixture(scope="module")
def azurite() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="io-azurite-"))
    try:
        with azurite_blob(base) as connection_string:
            yield connection_string
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["filesystem", pytest.param("azure", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "azure":
        return AzureBlobStore(request.getfixturevalue("azurite"), f"c{uuid.uuid4().hex[:12]}")
    return FilesystemBlobStore(tmp_path / "blobs")


def test_put_get_exists_delete(store: BlobStore) -> None:
    store.check()
    key = "images/1/det_abc/iq_123-beef"
    assert not store.exists(key)
    store.put(key, b"\xff\xd8\xffdata", "image/jpeg")
    assert store.exists(key) and store.get(key) == b"\xff\xd8\xffdata"
    store.put(key, b"replaced")
    assert store.get(key) == b"replaced"
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert not store.exists(key)
    with pytest.raises(NotFoundError):
        store.get(key)


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "a//b", "spaces in/key", ""])
def test_keys_cannot_escape(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_filesystem_check_fails_when_root_is_gone(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    shutil.rmtree(tmp_path / "blobs")
    with pytest.raises(ServiceUnavailableError):
        store.check()


@pytest.mark.integration
def test_the_api_keeps_images_in_azurite(azurite: str, settings, helpers, make_api) -> None:
    """The whole submit path on Azure blobs; a refused image leaves no blob behind."""
    container = f"api{uuid.uuid4().hex[:10]}"
    admin = make_api(
        settings.model_copy(
            update={"blob_backend": "azure", "azure_storage_connection_string": azurite, "azure_container": container}
        )
    )
    blobs = BlobServiceClient.from_connection_string(azurite).get_container_client(container)
    assert admin.get("/health/ready").json()["checks"]["blob_store"] == "ok"
    detector = admin.create_detector()
    iq = admin.submit(detector["id"], helpers.jpeg(90)).json()
    assert admin.get(f"/v1/image-queries/{iq['id']}/image").content == helpers.jpeg(90)
    assert len(list(blobs.list_blobs())) == 1
    assert admin.submit(detector["id"], b"GIF89a not supported").status_code == 400
    assert helpers.upload_model(admin, detector["id"]).status_code == 201
    assert len(list(blobs.list_blobs())) == 2
    assert admin.delete(f"/v1/detectors/{detector['id']}").status_code == 204
    assert list(blobs.list_blobs()) == []
