"""A closed-loop load generator: N clients, each posting images back to back."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.reliability.helpers import jpeg


@dataclass
class Sample:
    started: float
    seconds: float
    status: int
    code: str | None


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    duration_s: float = 0.0

    def statuses(self) -> Counter:
        return Counter(s.status for s in self.samples)

    def percentile(self, q: float, ok_only: bool = True) -> float:
        values = sorted(s.seconds for s in self.samples if not ok_only or s.status < 400)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.duration_s if self.duration_s else 0.0


def run_load(
    url: str,
    token: str,
    detector_ids: list[str],
    *,
    clients: int,
    duration_s: float,
    stop: threading.Event | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Each client cycles over the detectors with bright and dark images (confident answers)."""
    result = LoadResult()
    lock = threading.Lock()
    stop = stop or threading.Event()
    images = [jpeg(230, (320, 240)), jpeg(20, (320, 240))]
    deadline = time.monotonic() + duration_s

    def client(index: int) -> None:
        local: list[Sample] = []
        with httpx.Client(base_url=url, headers={"x-api-token": token}, timeout=timeout_s) as http:
            n = index
            while time.monotonic() < deadline and not stop.is_set():
                detector_id = detector_ids[n % len(detector_ids)]
                started = time.monotonic()
                try:
                    response = http.post(
                        "/device-api/v1/image-queries",
                        params={"detector_id": detector_id},
                        content=images[n % 2],
                        headers={"content-type": "image/jpeg"},
                    )
                    code = None
                    if response.status_code >= 400:
                        try:
                            code = response.json().get("code")
                        except ValueError:
                            code = "not_json"
                    local.append(Sample(started, time.monotonic() - started, response.status_code, code))
                except httpx.HTTPError as exc:
                    local.append(Sample(started, time.monotonic() - started, 0, type(exc).__name__))
                n += 1
        with lock:
            result.samples.extend(local)

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + timeout_s + 30)
    result.duration_s = time.monotonic() - began
    return result
