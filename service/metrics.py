"""Prometheus metrics at ``GET /metrics`` (prometheus-client, text exposition format).

Two kinds, each where it is true:

- the fleet's state, read from the database at scrape time by ``FleetCollector``
  (``db.metrics_queries``): queue depth per target key, active leases,
  measurements by outcome, workers by state, jobs by state, tuner rounds and
  their candidate generation time (tuners write a row per batch). Every
  replica answers the same, and a restart loses nothing;
- what this API process saw, updated in ``service/routes/leases.py``: lease
  and report request latency (histograms) and leases found expired (counter).

``/metrics`` needs no token, as Prometheus scrapes without one, so it carries
counts only: no names, tokens, traces or target JSON beyond the target key.
Each app has its own registry, so several apps in one process (the tests) do
not share counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_scope
from db.metrics_queries import fleet_counts

log = logging.getLogger(__name__)

# Leases answer in milliseconds; a report with confirmations and a busy SQLite can take seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class FleetCollector(Collector):
    """Gauges and counters of the fleet, computed from the database at each scrape."""

    def __init__(self, factory: sessionmaker[Session], *, worker_seen_s: float):
        self.factory = factory
        self.worker_seen_s = worker_seen_s

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.factory) as session:
            counts = fleet_counts(session, worker_seen_s=self.worker_seen_s)
        depth = GaugeMetricFamily("tunehub_queue_depth", "Candidates waiting to be leased, per target key.",
                                  labels=["target_key"])
        for key, n in sorted(counts.queue_depth.items()):
            depth.add_metric([key], n)
        yield depth
        yield GaugeMetricFamily("tunehub_leases_active", "Unexpired leases holding candidates.",
                                value=counts.active_leases)
        measured = CounterMetricFamily("tunehub_measurements", "Measurements stored, by outcome (ok or error kind).",
                                       labels=["outcome"])
        for outcome, n in sorted(counts.measurements.items()):
            measured.add_metric([outcome], n)
        yield measured
        workers = GaugeMetricFamily("tunehub_workers", "Registered workers by state.", labels=["state"])
        for state, n in counts.workers.items():
            workers.add_metric([state], n)
        yield workers
        jobs = GaugeMetricFamily("tunehub_jobs", "Jobs by status.", labels=["status"])
        for status, n in counts.jobs.items():
            jobs.add_metric([status], n)
        yield jobs
        yield CounterMetricFamily("tunehub_tuner_rounds", "Batches of candidates the tuners have queued.",
                                  value=counts.tuner_rounds)
        yield SummaryMetricFamily("tunehub_tuner_generation_seconds",
                                  "Time the tuners' searches took to propose a batch (count = batches).",
                                  count_value=counts.tuner_rounds, sum_value=counts.generation_s)


@dataclass
class ServiceMetrics:
    """One app's registry: the fleet collector and this process's request metrics."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.lease_seconds = Histogram("tunehub_lease_request_seconds", "Time to answer POST /leases.",
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.report_seconds = Histogram("tunehub_report_request_seconds",
                                        "Time to answer POST /leases/{id}/results.",
                                        buckets=_LATENCY_BUCKETS, registry=self.registry)
        # Counted by the replica whose lease request sweeps them (summed over replicas by Prometheus); on
        # PostgreSQL two replicas sweeping at the same instant may both count one lease.
        self.leases_expired = Counter("tunehub_leases_expired", "Leases that expired holding candidates "
                                      "(their candidates went back to the queue), as swept by this process.",
                                      registry=self.registry)

    def watch_fleet(self, factory: sessionmaker[Session], *, worker_seen_s: float) -> None:
        self.registry.register(FleetCollector(factory, worker_seen_s=worker_seen_s))


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition; no token (scrapers have none), counts only."""
    return Response(content=generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
