"""``python -m intellioptics_edge``: serve the edge API with uvicorn on INTELLIOPTICS_EDGE_API_PORT."""

from __future__ import annotations

import logging

import uvicorn

from intellioptics_edge.app import create_app
from intellioptics_edge.settings import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.edge_api_host,
        port=settings.edge_api_port,
        log_level=settings.log_level.lower(),
        access_log=False,  # per-request logging costs latency; /metrics and /status count instead
    )


if __name__ == "__main__":
    main()
