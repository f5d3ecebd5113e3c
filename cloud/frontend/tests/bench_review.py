"""Labeling throughput of the review page: a scripted reviewer labels 50 items in Chromium.

    .venv/bin/python -m cloud.frontend.tests.bench_review [--items 50] [--no-write]

Four cases: the cloud on the same machine, answered the moment each item is on screen;
the cloud 300 ms away (Chromium's network emulation adds 300 ms to every request), with
a reviewer who looks at each image for a second first (what prefetching is for), with a
very fast reviewer (0.3 s per image), and answered at once (the worst case: faster than
any refill can keep up with, see the notes written with the table).

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Case:
    name: str
    latency_ms: int
    think_ms: int


CASES = (
    Case("same machine, answered at once", 0, 0),
    Case("300 ms round trip, 1 s to look at each image", 300, 1000),
    Case("300 ms round trip, 0.3 s to look at each image", 300, 300),
    Case("300 ms round trip, answered at once", 300, 0),
)


def run(items: int, case: Case) -> dict:
    ensure_built()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="io-bench-ui-") as tmp, cloud_api(Path(tmp)) as cloud:
        detector_id, _ = submit_images(cloud, "bench-review", "Is the part good?", items + 2)
        result = run_browser(
            "bench",
            {
                "baseUrl": cloud.base_url,
                "adminToken": cloud.admin_token,
                "detectorId": detector_id,
                "count": items,
                "latencyMs": case.latency_ms,
                "thinkMs": case.think_ms,
            },
            Path(tmp) / "browser",
            timeout=600,
        )
    if result["console"]:
        raise SystemExit(f"console errors during the bench: {result['console']}")
    labeled = int(result["labeled"])
    ui = [float(v) for v in result["uiWaitsMs"]]
    client = [float(v) for v in result["clientWaitsMs"]]
    in_memory = [bool(v) for v in result["uiInMemory"]]
    return {
        "in_memory": sum(in_memory),
        "in_memory_waits": [w for w, hit in zip(ui, in_memory, strict=True) if hit],
        "waits": len(in_memory),
        "labeled": labeled,
        "items_per_min": labeled / (float(result["elapsedMs"]) / 60_000),
        "think_ms": case.think_ms,
        "ui_p50": statistics.median(ui),
        "ui_p95": percentile(ui, 95),
        "ui_max": max(ui),
        "client_p50": statistics.median(client),
        "client_p95": percentile(client, 95),
        "load": max(load_before, os.getloadavg()[0]),
    }


def section(results: list[tuple[Case, dict]]) -> str:
    load = max(numbers["load"] for _, numbers in results)
    hits = [wait for _, numbers in results for wait in numbers["in_memory_waits"]]
    rows = []
    for case, n in results:
        verdict = "meets" if n["ui_p95"] < TARGET_P95_MS else "MISSES"
        rows.append(
            f"| {case.name} | {n['labeled']:.0f} | {n['items_per_min']:.0f} | {n['in_memory']:.0f} of {n['waits']:.0f} | "
            f"{n['ui_p50']:.0f} | {n['ui_p95']:.0f} ({verdict}) | {n['ui_max']:.0f} | "
            f"{n['client_p50']:.0f} / {n['client_p95']:.0f} | {n['load']:.1f} |"
        )
    return (
        "## Web UI\n\n"
        f"Labeling throughput of the review page (`make bench-frontend`, {datetime.now(UTC):%Y-%m-%d}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work (1-min load average up to "
        f"{load:.1f}), headless Debian Chromium, cloud API on SQLite on the same machine). "
        "A scripted reviewer labels the items with the keyboard. The wait is from the key press to the next "
        'image painted, as the page measures it (`performance.measure("io-review-wait")`); the script column is '
        "what the driving script sees (adds Playwright's round trips). The 300 ms cases use Chromium's network "
        f"emulation (300 ms added to every request). Target: p95 < {TARGET_P95_MS:.0f} ms.\n\n"
        "| case | items | items per minute | next item in memory | wait p50 ms | wait p95 ms | max ms "
        "| script p50 / p95 ms | load average |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "What the wait is made of. *Next item in memory*: how often the next item was claimed and its image "
        "decoded when the key was pressed; then it takes the screen in one frame (the wait is React's render "
        f"and the paint: p50 {statistics.median(hits) if hits else float('nan'):.0f} ms over all cases), and the label is sent in the background. Otherwise the wait is "
        "the refill: a claim (`POST /v1/review/claim?ahead=1`) and an image download, two round trips. The "
        "session keeps two items claimed ahead, up to four for a reviewer who answers faster than a refill "
        "takes, with up to three claims on their way at once and each image downloading while the next "
        "claim goes out; the panel's details are asked for only once an item has been on screen 250 ms. "
        "A reviewer who looks at each image for 0.3 s or more never outruns that 300 ms away. A script "
        "that answers the instant an item appears does: every item costs at least three requests (claim, "
        "image, label), a browser opens six connections to a host, so 300 ms away at most about 20 "
        "requests, 6 to 7 items, go through per second (about 150 ms per item), and a script that needs "
        "about 60 ms per item waits for the rest (the last row). Only a claim that hands out several "
        "items per request (or HTTP/2) would lift that bound. On the same machine the bound is what the "
        "cloud API process gets of the CPUs (the load average column: the machine's other work): the "
        "same script outruns the refill there too when that share is small.\n"
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
    results = [(case, run(args.items, case)) for case in CASES]
    text = section(results)
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the Web UI section of {BENCHMARKS}")


if __name__ == "__main__":
    main()
