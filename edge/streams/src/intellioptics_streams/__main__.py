"""``python -m intellioptics_streams``: run the stream service on INTELLIOPTICS_STREAMS_PORT."""

from __future__ import annotations

import logging

import uvicorn

from intellioptics_streams.app import create_app
from intellioptics_streams.settings import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request with its URL at INFO; the webhook URLs may hold tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.streams_host,
        port=settings.streams_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
