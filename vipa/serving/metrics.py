"""Prometheus metrics of the server: requests, errors, batch sizes, latency."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """One registry per app, so several servers in one process (tests) never mix counts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vipa_requests", "Predictions answered", registry=self.registry)
        self.errors = Counter("vipa_errors", "Requests refused or failed, by HTTP status",
                              ["status"], registry=self.registry)
        self.latency = Histogram("vipa_request_seconds", "Time to answer a prediction",
                                 buckets=_LATENCY, registry=self.registry)
        self.batch_size = Histogram("vipa_batch_phrases", "Phrases per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.batch_seconds = Histogram("vipa_batch_seconds", "Time of one model call",
                                       buckets=_LATENCY, registry=self.registry)

    def request(self, seconds: float) -> None:
        self.requests.inc()
        self.latency.observe(seconds)

    def error(self, status: int) -> None:
        self.errors.labels(status=str(status)).inc()

    def batch(self, phrases: int, seconds: float) -> None:
        self.batch_size.observe(phrases)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
