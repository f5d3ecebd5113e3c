#!/usr/bin/env python3
"""Render the edge gateway's nginx configuration from its templates (stdlib only).

Replaces ``${INTELLIOPTICS_*}`` placeholders the way the official nginx image's
templates mechanism (envsubst) does, and leaves nginx's own ``$variables`` alone.

    python3 edge/nginx/render.py --out-dir /tmp/gw --port 30101 \
        --edge-api 127.0.0.1:8718 [--cloud-url https://cloud.example.com]
    nginx -p /tmp/gw -c /tmp/gw/nginx.conf -g 'daemon off; pid /tmp/gw/nginx.pid;'
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
GATEWAY_TEMPLATE = HERE / "templates" / "gateway.conf.template"
MAIN_TEMPLATE = HERE / "nginx.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(INTELLIOPTICS_[A-Z0-9_]+)\}")


def substitute(template: str, values: dict[str, str]) -> str:
    """envsubst for our names only; an unset placeholder is an error, not an empty string."""
    missing = sorted({name for name in _PLACEHOLDER.findall(template) if name not in values})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def default_resolver() -> str:
    """The first nameserver of /etc/resolv.conf (nginx needs one for a cloud host name)."""
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return f"[{parts[1]}]" if ":" in parts[1] else parts[1]
    except OSError:
        pass
    return "127.0.0.1"


def normalize_cloud_url(url: str) -> str:
    """``scheme://host[:port]`` or empty; nginx passes request paths through unchanged."""
    url = url.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ValueError(f"cloud URL must be http(s)://host[:port] with no path, got {url!r}")
    if '"' in url or "'" in url or ";" in url:
        raise ValueError("cloud URL must not contain quotes or semicolons")
    return url


def gateway_values(
    *,
    port: int,
    edge_api: str,
    cloud_url: str = "",
    resolver: str | None = None,
    access_log: str = "/dev/stdout intellioptics_gateway",
) -> dict[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d+", edge_api):
        raise ValueError(f"edge API upstream must be host:port, got {edge_api!r}")
    return {
        "INTELLIOPTICS_GATEWAY_PORT": str(int(port)),
        "INTELLIOPTICS_EDGE_API_UPSTREAM": edge_api,
        "INTELLIOPTICS_CLOUD_URL": normalize_cloud_url(cloud_url),
        "INTELLIOPTICS_NGINX_RESOLVER": resolver or default_resolver(),
        "INTELLIOPTICS_NGINX_ACCESS_LOG": access_log,
    }


def render(
    out_dir: Path,
    *,
    port: int,
    edge_api: str,
    cloud_url: str = "",
    resolver: str | None = None,
    access_log: str = "/dev/stdout intellioptics_gateway",
    workers: int = 1,
) -> Path:
    """Write ``gateway.conf`` and ``nginx.conf`` into ``out_dir``; returns the main config path.

    ``out_dir`` doubles as the nginx prefix: its ``tmp/`` holds request-body temp files.
    """
    out_dir = Path(out_dir).resolve()
    (out_dir / "tmp").mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    values = gateway_values(port=port, edge_api=edge_api, cloud_url=cloud_url, resolver=resolver, access_log=access_log)
    gateway = out_dir / "gateway.conf"
    gateway.write_text(substitute(GATEWAY_TEMPLATE.read_text(), values))
    main = out_dir / "nginx.conf"
    main_values = {"INTELLIOPTICS_NGINX_GATEWAY_CONF": str(gateway), "INTELLIOPTICS_NGINX_WORKERS": str(int(workers))}
    main.write_text(substitute(MAIN_TEMPLATE.read_text(), main_values))
    return main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="where to write nginx.conf (also the nginx prefix)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("INTELLIOPTICS_GATEWAY_PORT", "30101")))
    parser.add_argument(
        "--edge-api",
        default=os.environ.get("INTELLIOPTICS_EDGE_API_UPSTREAM")
        or f"127.0.0.1:{os.environ.get('INTELLIOPTICS_EDGE_API_PORT', '8718')}",
    )
    parser.add_argument("--cloud-url", default=os.environ.get("INTELLIOPTICS_CLOUD_URL", ""))
    parser.add_argument("--resolver", default=os.environ.get("INTELLIOPTICS_NGINX_RESOLVER"))
    parser.add_argument(
        "--access-log", default=os.environ.get("INTELLIOPTICS_NGINX_ACCESS_LOG", "/dev/stdout intellioptics_gateway")
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("INTELLIOPTICS_NGINX_WORKERS", "1")))
    args = parser.parse_args(argv)
    try:
        path = render(
            args.out_dir,
            port=args.port,
            edge_api=args.edge_api,
            cloud_url=args.cloud_url,
            resolver=args.resolver,
            access_log=args.access_log,
            workers=args.workers,
        )
    except ValueError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
