"""Settings of the stream service: one typed object, read from ``INTELLIOPTICS_*`` variables.

Documented for operators in ``docs/configuration.md``; the streams themselves are in
edge-config (``streams:``), read from the edge API.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from intellioptics_common.settings import BaseServiceSettings


class StreamsSettings(BaseServiceSettings):
    streams_host: str = "0.0.0.0"
    streams_port: int = Field(default=8719, ge=1, le=65535)
    # The edge API: its GET /edge-config is the streams' configuration, its
    # POST /device-api/v1/image-queries the decision tree every sampled frame goes through.
    edge_api_url: str = "http://127.0.0.1:8718"
    # A token the edge API accepts: one of its INTELLIOPTICS_EDGE_TOKENS, or a cloud token.
    streams_token: str | None = None
    config_poll_interval_s: float = Field(default=2.0, gt=0, le=300)
    submit_timeout_s: float = Field(default=10.0, gt=0)

    # Sources: time limits of one open and one read (a camera that hangs must not wedge a
    # stream), and the reconnect backoff (doubling from base up to cap).
    source_open_timeout_s: float = Field(default=5.0, gt=0, le=120)
    source_read_timeout_s: float = Field(default=5.0, gt=0, le=120)
    reconnect_backoff_base_s: float = Field(default=0.5, gt=0)
    reconnect_backoff_cap_s: float = Field(default=5.0, gt=0)

    # Sinks: events waiting per sink (more are dropped and counted), webhook retry backoff.
    sink_queue_size: int = Field(default=200, ge=1, le=100_000)
    webhook_backoff_base_s: float = Field(default=0.5, gt=0)
    webhook_backoff_cap_s: float = Field(default=30.0, gt=0)

    def secret_fields(self) -> dict[str, str | None]:
        return {"streams_token": self.streams_token}

    @property
    def edge_api_base(self) -> str:
        return self.edge_api_url.strip().rstrip("/")


@lru_cache
def get_settings() -> StreamsSettings:
    return StreamsSettings()
