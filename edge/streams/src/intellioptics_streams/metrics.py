"""Prometheus metrics of the stream service (``GET /metrics``), per stream.

Read from the running streams at scrape time; a stream that restarts (new
configuration) starts its counters again from zero, which Prometheus treats as a reset.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from intellioptics_streams.grabber import StreamState
from intellioptics_streams.supervisor import Supervisor

_COUNTERS = (
    ("frames_read", "Frames decoded from the source"),
    ("frames_submitted", "Frames posted as image queries (once per frame, whatever the number of detectors)"),
    ("frames_skipped_motion", "Sampled frames not submitted because too little changed"),
    ("frames_dropped", "Sampling ticks missed because the previous frame was still being answered"),
    ("reconnects", "Times the source came back after being lost"),
    ("submit_errors", "Image queries the edge API refused or did not answer"),
)


class StreamsCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        runners = self._supervisor.runners()
        for field, documentation in _COUNTERS:
            family = CounterMetricFamily(f"intellioptics_stream_{field}", documentation, labels=["stream"])
            for runner in runners:
                value = (
                    getattr(runner.grabber, field) if field in ("frames_read", "reconnects") else getattr(runner, field)
                )
                family.add_metric([runner.name], value)
            yield family
        state = GaugeMetricFamily(
            "intellioptics_stream_state", "1 for the state the stream is in", labels=["stream", "state"]
        )
        sinks = CounterMetricFamily(
            "intellioptics_stream_sink_events",
            "Events handed to sinks, by outcome",
            labels=["stream", "sink", "outcome"],
        )
        for runner in runners:
            for candidate in StreamState:
                state.add_metric([runner.name, candidate.value], 1.0 if runner.state == candidate else 0.0)
            for sink in runner.sinks:
                label = f"{sink.kind}-{sink.index}"
                for outcome in ("delivered", "failed", "dropped", "retries"):
                    sinks.add_metric([runner.name, label, outcome], getattr(sink, outcome))
        yield state
        yield sinks
