"""``python -m intellioptics_cloud`` (migrate, then serve) and ``python -m intellioptics_cloud migrate``."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from intellioptics_cloud.db import make_engine, run_migrations
from intellioptics_cloud.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m intellioptics_cloud", description="IntelliOptics cloud API")
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = make_engine(settings.resolved_database_url)
    run_migrations(engine)
    engine.dispose()
    if args.command == "migrate":
        print("migrations applied", flush=True)
        return
    from intellioptics_cloud.app import create_app

    # proxy_headers off: uvicorn would replace the peer with X-Forwarded-For for 127.0.0.1,
    # and the app, which believes X-Forwarded-* only from INTELLIOPTICS_TRUSTED_PROXIES,
    # then took a camera behind the edge gateway for the peer and put the cloud's own
    # address into list links.
    uvicorn.run(
        create_app(settings),
        host=settings.cloud_host,
        port=settings.cloud_port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
