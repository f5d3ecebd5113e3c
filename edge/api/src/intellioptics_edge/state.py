"""Everything the edge API builds at start-up, kept on ``app.state.edge`` (see ``app.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from intellioptics_common.imaging import ImageLimits
from intellioptics_edge.auth import TokenVerifier
from intellioptics_edge.background import Background
from intellioptics_edge.cloud import CloudClient
from intellioptics_edge.detectors import DetectorDirectory
from intellioptics_edge.edge_config import EdgeConfigManager
from intellioptics_edge.inference_client import InferenceClient
from intellioptics_edge.outbox_store import Outbox
from intellioptics_edge.service import ImageQueryService
from intellioptics_edge.settings import EdgeSettings
from intellioptics_edge.stats import EdgeStats
from intellioptics_edge.store import QueryStore
from intellioptics_edge.streams_status import StreamsStatus


@dataclass(frozen=True)
class EdgeState:
    settings: EdgeSettings
    config: EdgeConfigManager
    store: QueryStore
    outbox: Outbox
    inference: InferenceClient
    cloud: CloudClient | None
    tokens: TokenVerifier
    detectors: DetectorDirectory
    stats: EdgeStats
    service: ImageQueryService
    limits: ImageLimits
    background: Background
    streams: StreamsStatus
