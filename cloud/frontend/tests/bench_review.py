"""Labeling throughput of the review page: a scripted reviewer labels 50 items in Chromium.

    .venv/bin/python -m cloud.frontend.tests.bench_review [--items 50] [--no-write]

Starts the real cloud API (SQLite, local blobs) serving the built UI, queues ``items + 2``
images through the groundlight SDK, and lets ``browser.mjs bench`` answer each item the
moment it is on screen. Reports items per minute (limited by the UI and the API, not by a
person) and the wait between items: from the key press to the next item painted, as the
page itself measures it (``performance.measure("io-review-wait")``), and as the script
sees it (key press to the new item observed, which adds the driver's own overhead).
Writes the "## Web UI" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cloud.frontend.tests.stack import FRONTEND, cloud_api, ensure_built, run_browser, submit_images

BENCHMARKS = FRONTEND.parents[1] / "docs" / "benchmarks.md"
TARGET_P95_MS = 100.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run(items: int) -> dict[str, float]:
    ensure_built()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="io-bench-ui-") as tmp, cloud_api(Path(tmp)) as cloud:
        detector_id, _ = submit_images(cloud, "bench-review", "Is the part good?", items + 2)
        result = run_browser(
            "bench",
            {"baseUrl": cloud.base_url, "adminToken": cloud.admin_token, "detectorId": detector_id, "count": items},
            Path(tmp) / "browser",
            timeout=600,
        )
    if result["console"]:
        raise SystemExit(f"console errors during the bench: {result['console']}")
    labeled = int(result["labeled"])
    ui = [float(v) for v in result["uiWaitsMs"]]
    client = [float(v) for v in result["clientWaitsMs"]]
    return {
        "labeled": labeled,
        "items_per_min": labeled / (float(result["elapsedMs"]) / 60_000),
        "ui_p50": statistics.median(ui),
        "ui_p95": percentile(ui, 95),
        "ui_max": max(ui),
        "client_p50": statistics.median(client),
        "client_p95": percentile(client, 95),
        "load": max(load_before, os.getloadavg()[0]),
    }


def section(numbers: dict[str, float]) -> str:
    verdict = "meets" if numbers["ui_p95"] < TARGET_P95_MS else "MISSES"
    return (
        "## Web UI\n\n"
        f"Labeling throughput of the review page (`make bench-frontend`, {datetime.now(UTC):%Y-%m-%d}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work (1-min load average up to "
        f"{numbers['load']:.1f}), headless Debian Chromium, cloud API on SQLite on the same machine). "
        f"A scripted reviewer labels {numbers['labeled']:.0f} items with the keyboard, answering each the "
        "moment it is on screen, so the rate is what the UI and API allow, not a person.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| items labeled | {numbers['labeled']:.0f} |\n"
        f"| items per minute | {numbers['items_per_min']:.0f} |\n"
        f"| wait between items, key press to next image painted, p50 | {numbers['ui_p50']:.0f} ms |\n"
        f"| same, p95 (target < {TARGET_P95_MS:.0f} ms: {verdict}) | {numbers['ui_p95']:.0f} ms |\n"
        f"| same, max | {numbers['ui_max']:.0f} ms |\n"
        f"| as the driving script sees it (adds Playwright's round trips), p50 / p95 | "
        f"{numbers['client_p50']:.0f} / {numbers['client_p95']:.0f} ms |\n\n"
        "What the wait is made of: the next images in the queue are downloaded and decoded before "
        "they are needed, so it is never an image download. This cloud lends a reviewer one claimed "
        "item at a time (a claim answers with the item already held), so the next item can only be "
        "claimed once the label is stored: the wait is two API writes in a row (label, then claim), "
        "each a few ms on an idle machine and tens of ms when other work loads the CPUs. A cloud that honours "
        "`POST /v1/review/claim?ahead=1` (an item besides those held) lets the UI keep the next item "
        "claimed and preloaded, and the wait becomes one frame with no request; the UI already sends it.\n"
    )


def write_section(text: str) -> None:
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Web UI\n.*?(?=^## |\Z)", re.S | re.M)
    updated = pattern.sub(text + "\n", current) if pattern.search(current) else current.rstrip() + "\n\n" + text
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    numbers = run(args.items)
    text = section(numbers)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the Web UI section of {BENCHMARKS}")


if __name__ == "__main__":
    main()
