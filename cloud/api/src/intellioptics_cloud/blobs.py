"""Blob store: images and model files. Rows hold metadata and sha256; bytes live here.

Two implementations behind one small protocol, chosen by ``INTELLIOPTICS_BLOB_BACKEND``:
the local filesystem (embedded default) and Azure Blob Storage (tested against Azurite).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from intellioptics_common.errors import NotFoundError, ServiceUnavailableError

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*$")


def check_key(key: str) -> str:
    """Keys are built by us, but refuse anything that could escape the root anyway."""
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def check(self) -> None:
        """Raise ServiceUnavailableError when the store cannot be used."""


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    # content_type: the BlobStore interface (Azure stores it; a directory has nowhere to).
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:  # noqa: ARG002
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a blob.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError("The stored file was not found.", log_message=f"blob {key} missing") from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise ServiceUnavailableError("The blob store is not writable.", log_message=f"{self.root} not writable")


class AzureBlobStore:
    """Azure Blob Storage (or Azurite) through ``azure-storage-blob``."""

    def __init__(self, connection_string: str, container: str) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._container = self._service.get_container_client(container)
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from azure.storage.blob import ContentSettings

        self._container.upload_blob(
            check_key(key), data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )

    def get(self, key: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._container.download_blob(check_key(key)).readall()
        except ResourceNotFoundError:
            raise NotFoundError("The stored file was not found.", log_message=f"blob {key} missing") from None

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(check_key(key))

    def exists(self, key: str) -> bool:
        return bool(self._container.get_blob_client(check_key(key)).exists())

    def check(self) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._container.get_container_properties()
        except AzureError as exc:
            raise ServiceUnavailableError("The blob store is unreachable.", log_message=repr(exc)) from exc


def make_blob_store(backend: str, *, root: Path, connection_string: str | None, container: str) -> BlobStore:
    if backend == "azure":
        if not connection_string:
            raise ValueError("INTELLIOPTICS_AZURE_STORAGE_CONNECTION_STRING is required for the azure blob backend")
        return AzureBlobStore(connection_string, container)
    return FilesystemBlobStore(root)
