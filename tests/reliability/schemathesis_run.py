"""Run the schemathesis CLI against a live OpenAPI and count what it tried.

The CLI (not the pytest plugin) keeps hypothesis out of this suite's own process and
lets ``make soak`` reuse the same call with more examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@dataclass(frozen=True)
class FuzzResult:
    returncode: int
    cases: int
    failures: int
    output: str


def run_schemathesis(
    schema_url: str,
    *,
    base_url: str | None,
    token: str,
    report_dir: Path,
    max_examples: int,
    seed: int = 1,
    max_time_s: int = 120,
    extra: tuple[str, ...] = (),
) -> FuzzResult:
    """Every phase (coverage, fuzzing, stateful) with the one check that matters here:
    no 5xx. ``base_url`` sends the requests somewhere other than the schema's server
    (the edge's schema, fetched from the edge API, tried through nginx)."""
    if not SCHEMATHESIS.exists():
        raise FileNotFoundError(f"{SCHEMATHESIS} not found: pip install schemathesis (pinned in constraints.txt)")
    report_dir.mkdir(parents=True, exist_ok=True)
    ndjson = report_dir / "events.ndjson"
    args = [
        str(SCHEMATHESIS),
        "run",
        schema_url,
        "--header",
        f"x-api-token: {token}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-shrink",
        "--max-time",
        str(max_time_s),
        "--request-timeout",
        "30",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(ndjson),
        *extra,
    ]
    if base_url:
        args += ["--url", base_url]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=max_time_s + 120, check=False)
    output = completed.stdout + completed.stderr
    return FuzzResult(completed.returncode, _count_cases(ndjson, output), output.count("ST101"), output)


def _count_cases(ndjson: Path, output: str) -> int:
    """Test cases generated, from the summary line ("1785 generated"), else the event log."""
    for line in output.splitlines():
        words = line.split()
        if "generated," in words:
            return int(words[words.index("generated,") - 1])
    count = 0
    if ndjson.exists():
        for line in ndjson.read_text().splitlines():
            event = json.loads(line)
            if "ScenarioFinished" in event:
                count += 1
    return count
