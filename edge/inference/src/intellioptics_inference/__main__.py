"""``python -m intellioptics_inference``: serve on the configured host and port."""

from __future__ import annotations

import logging

import uvicorn

from intellioptics_inference.app import create_app
from intellioptics_inference.settings import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No access log: one line per image costs more than the hot path's own overhead budget;
    # /metrics counts requests by detector and status instead.
    uvicorn.run(
        create_app(settings),
        host=settings.inference_host,
        port=settings.inference_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # The edge API keeps pooled connections to us; uvicorn's 5 s default would make
        # it reconnect after every quiet moment on the line.
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
