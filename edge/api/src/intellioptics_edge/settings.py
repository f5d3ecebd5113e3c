"""Settings of the edge API: one typed object, read from ``INTELLIOPTICS_*`` variables.

Documented for operators in ``docs/edge-config.md``.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field

from intellioptics_common.settings import BaseServiceSettings


class EdgeSettings(BaseServiceSettings):
    edge_api_host: str = "0.0.0.0"
    edge_api_port: int = Field(default=8718, ge=1, le=65535)
    inference_url: str = "http://127.0.0.1:8001"
    # Empty means offline: the edge answers what it can and queues the rest.
    cloud_url: str = ""
    device_token: str | None = None
    # The cloud account this edge serves when it has no device token (with one, the device
    # token's account; both set must agree). Tokens of other accounts get 403.
    edge_account_id: int | None = Field(default=None, ge=1)
    edge_data_dir: Path = Path("data/edge")
    # Defaults to <edge_data_dir>/edge-config.yaml when unset.
    edge_config: Path | None = None
    # Offline token list: comma-separated, and/or a file with one token per line.
    edge_tokens: str = ""
    edge_tokens_file: Path | None = None

    inference_connect_timeout_s: float = Field(default=1.0, gt=0)
    inference_read_timeout_s: float = Field(default=10.0, gt=0)
    cloud_connect_timeout_s: float = Field(default=2.0, gt=0)
    cloud_read_timeout_s: float = Field(default=4.0, gt=0)
    token_cache_ttl_s: float = Field(default=300.0, ge=0)
    detector_cache_ttl_s: float = Field(default=60.0, ge=0)
    readiness_timeout_s: float = Field(default=2.0, gt=0)

    max_image_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    store_max_queries: int = Field(default=10_000, ge=1)
    store_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    # Outbox sender (delivery of escalations and audits to the cloud).
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    # Items taken per pass, sent as batch requests of outbox_items_per_request (1: one
    # POST image-queries per item), outbox_concurrency requests in flight at once.
    outbox_batch_size: int = Field(default=200, ge=1, le=1000)
    outbox_items_per_request: int = Field(default=50, ge=1, le=50)
    outbox_concurrency: int = Field(default=4, ge=1, le=64)
    # A 404 (detector unknown at the cloud) is retried while the item is younger than this.
    outbox_not_found_grace_s: float = Field(default=24 * 3600.0, ge=0)
    outbox_backoff_base_s: float = Field(default=1.0, gt=0)
    outbox_backoff_cap_s: float = Field(default=300.0, gt=0)
    outbox_max_items: int = Field(default=50_000, ge=1)
    outbox_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    outbox_keep_finished_s: float = Field(default=24 * 3600.0, ge=0)
    outbox_request_timeout_s: float = Field(default=30.0, gt=0)
    # Outbox bound and hourly counters to SQLite, in every mode (background.Housekeeper).
    housekeeping_interval_s: float = Field(default=5.0, gt=0)
    # GET image-queries/{id} of an escalated query asks the cloud for the human answer.
    cloud_answer_timeout_s: float = Field(default=1.5, gt=0)

    # Registration, heartbeat and hourly counters.
    edge_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    heartbeat_interval_s: float = Field(default=60.0, gt=0)
    metrics_report_interval_s: float = Field(default=300.0, gt=0)

    # Model updater: the directory the inference service reads (INTELLIOPTICS_MODELS_DIR).
    models_dir: Path = Path("data/edge/models")
    model_download_timeout_s: float = Field(default=300.0, gt=0)

    # The stream service (edge/streams), whose status GET /streams and the status page show.
    streams_url: str = "http://127.0.0.1:8719"
    streams_timeout_s: float = Field(default=2.0, gt=0)

    # Refused tokens per client address before 429 (0: no limit); the gateway's
    # X-Forwarded-For names the client when the peer is one of trusted_proxies (CIDRs).
    auth_max_failures: int = Field(default=20, ge=0)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    trusted_proxies: str = "127.0.0.0/8,::1/128"

    def secret_fields(self) -> dict[str, str | None]:
        return {"device_token": self.device_token}

    @property
    def trusted_proxy_networks(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def offline(self) -> bool:
        return not self.cloud_url.strip()

    @property
    def cloud_base(self) -> str:
        return self.cloud_url.strip().rstrip("/")

    @property
    def edge_config_path(self) -> Path:
        return self.edge_config or self.edge_data_dir / "edge-config.yaml"

    @property
    def database_path(self) -> Path:
        return self.edge_data_dir / "edge.sqlite3"

    @property
    def edge_id_path(self) -> Path:
        return self.edge_data_dir / "edge_id"

    def local_tokens(self) -> frozenset[str]:
        """Tokens accepted without the cloud (read once at start; restart to change)."""
        tokens = {t.strip() for t in self.edge_tokens.split(",") if t.strip()}
        if self.edge_tokens_file is not None and self.edge_tokens_file.is_file():
            lines = self.edge_tokens_file.read_text().splitlines()
            tokens.update(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        return frozenset(tokens)


@lru_cache
def get_settings() -> EdgeSettings:
    return EdgeSettings()
