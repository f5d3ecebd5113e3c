"""Reconciles the running streams with edge-config's ``streams:`` section.

Every ``config_poll_interval_s`` the service reads ``GET /edge-config`` from the edge
API; a stream whose configuration changed is stopped and started again, a new one is
started, a removed or disabled one is stopped. Streams whose configuration is the same
are not touched. Stops run in parallel, so a change takes at most ~2 s however many
streams it touches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from intellioptics_common.streams import StreamConfig
from intellioptics_streams.edge_client import EdgeApiClient
from intellioptics_streams.errors import EdgeApiError
from intellioptics_streams.grabber import SourceFactory, open_video
from intellioptics_streams.stream import StreamOptions, StreamRunner, stopped_status

logger = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        edge: EdgeApiClient,
        options: StreamOptions,
        poll_interval_s: float,
        *,
        open_source: SourceFactory = open_video,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._edge = edge
        self._options = options
        self._poll_interval_s = poll_interval_s
        self._open_source = open_source
        self._clock = clock
        self._lock = threading.Lock()  # the running streams, for status
        self._apply_lock = threading.Lock()  # one reconciliation at a time
        self._configs: dict[str, StreamConfig] = {}
        self._runners: dict[str, StreamRunner] = {}
        self.config_loaded = False
        self.last_poll_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="streams-config", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Every stream stopped within ~2 s; a poll still waiting on the edge API is left
        to end on its own (it can no longer start anything)."""
        self._stop.set()
        self._thread.join(0.2)
        self.apply({}, final=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                configs = self._edge.streams()
            except EdgeApiError as exc:
                if exc.public_message != self.last_poll_error:
                    logger.warning("reading the streams configuration: %s", exc.public_message)
                self.last_poll_error = exc.public_message
            else:
                self.last_poll_error = None
                self.apply(configs)
                self.config_loaded = True
            self._stop.wait(self._poll_interval_s)

    def apply(self, configs: dict[str, StreamConfig], *, final: bool = False) -> None:
        """Start, stop and restart only what changed; status stays readable meanwhile."""
        with self._apply_lock:
            if self._stop.is_set() and not final:
                return  # shutting down: a late poll must not start streams again
            wanted = {name: config for name, config in configs.items() if config.enabled}
            with self._lock:
                outdated = [runner for name, runner in self._runners.items() if wanted.get(name) != runner.config]
                for runner in outdated:
                    del self._runners[runner.name]
            stoppers = [threading.Thread(target=runner.stop, daemon=True) for runner in outdated]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
            with self._lock:
                for name, config in wanted.items():
                    if name not in self._runners:
                        runner = StreamRunner(
                            name, config, self._edge, self._options, open_source=self._open_source, clock=self._clock
                        )
                        runner.start()
                        self._runners[name] = runner
                self._configs = dict(configs)

    def runners(self) -> list[StreamRunner]:
        with self._lock:
            return list(self._runners.values())

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            configs, runners = dict(self._configs), dict(self._runners)
        return [
            runners[name].status() if name in runners else stopped_status(name, config)
            for name, config in sorted(configs.items())
        ]
