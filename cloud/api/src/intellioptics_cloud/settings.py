"""The cloud API's one typed Settings (``INTELLIOPTICS_*`` environment variables)."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from intellioptics_common.settings import PLACEHOLDER_SECRETS, BaseServiceSettings

# The groundlight SDK refuses tokens whose first 20 characters are not [A-Za-z0-9_].
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_]{20}[A-Za-z0-9_\-]{4,}$")
DEVELOPMENT_SECRET = "dev-secret-key-change-me"
# Database passwords of images, templates and tutorials: in production they mean "not set".
PLACEHOLDER_DATABASE_PASSWORDS = PLACEHOLDER_SECRETS | {"postgres", "password", "intellioptics", "admin", "root"}


def _default_data_dir() -> Path:
    # BaseSettings reads INTELLIOPTICS_DATA_DIR for the field itself; this is only the fallback.
    return Path(os.environ.get("INTELLIOPTICS_DATA_DIR", "data")).resolve()


class CloudSettings(BaseServiceSettings):
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    blob_backend: Literal["filesystem", "azure"] = "filesystem"
    blob_dir: Path | None = None
    azure_storage_connection_string: str | None = None
    azure_container: str = "intellioptics"
    queue_backend: Literal["database", "servicebus"] = "database"
    servicebus_connection_string: str | None = None
    secret_key: str = DEVELOPMENT_SECRET
    bootstrap_token: str | None = None
    cloud_host: str = "127.0.0.1"
    cloud_port: int = Field(default=8000, ge=1, le=65535)
    web_dir: Path | None = None
    max_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    review_lock_s: float = Field(default=120.0, gt=0)
    training_lease_s: float = Field(default=600.0, gt=0)
    training_max_attempts: int = Field(default=3, ge=1)
    retrain_schedule_s: float = Field(
        default=0.0, ge=0, description="queue a job for every detector with new labels this often (0: off)"
    )
    model_url_ttl_s: int = Field(default=3600, ge=10)
    public_url: str | None = Field(default=None, description="Base URL put in signed download links")
    # Refused tokens per client address before 429 (0: no limit), counted over the window.
    auth_max_failures: int = Field(default=20, ge=0)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    # Peers whose X-Forwarded-For names the client (the cloud nginx); comma-separated CIDRs.
    trusted_proxies: str = "127.0.0.0/8,::1/128"
    # Browser origins allowed by CORS, comma-separated (empty: same-origin only).
    cors_allow_origins: str = ""

    @field_validator("bootstrap_token")
    @classmethod
    def _check_bootstrap_token(cls, value: str | None) -> str | None:
        if value and not TOKEN_PATTERN.match(value):
            raise ValueError(
                "INTELLIOPTICS_BOOTSTRAP_TOKEN must be at least 24 characters, the first 20 of them [A-Za-z0-9_] "
                "(the groundlight SDK checks this format)"
            )
        return value or None

    @model_validator(mode="after")
    def _refuse_placeholder_database_password(self) -> CloudSettings:
        if self.environment != "production" or not self.database_url:
            return self
        try:
            password = make_url(self.database_url).password
        except ArgumentError:
            raise ValueError("INTELLIOPTICS_DATABASE_URL is not a SQLAlchemy database URL") from None
        if password is not None and str(password).strip().lower() in PLACEHOLDER_DATABASE_PASSWORDS:
            raise ValueError(
                "INTELLIOPTICS_DATABASE_URL has a placeholder password; set a real one outside development"
            )
        return self

    def secret_fields(self) -> dict[str, str | None]:
        return {"secret_key": self.secret_key if self.secret_key != DEVELOPMENT_SECRET else ""}

    @property
    def trusted_proxy_networks(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def cloud_dir(self) -> Path:
        return self.data_dir / "cloud"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.cloud_dir / 'cloud.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.cloud_dir / "blobs"


@lru_cache
def get_settings() -> CloudSettings:
    return CloudSettings()
