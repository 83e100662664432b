"""Relay metrics for Prometheus (``prometheus-client``), served on ``MSS_METRICS_PORT``.

One registry per ``GatewayService`` (several gateways can run in one test process). Labels
carry reasons, kinds and peer domains, never addresses or content.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)


class Metrics:
    """The gateway's counters (see the issue: accepted, refused by reason, delivered, deferred,
    bounced, queue depth, delivery latency, TLS failures by peer, notification failures)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("mss_smtp_accepted", "Messages accepted (250 after DATA)",
                                ["channel"], registry=r)
        self.refused = Counter("mss_smtp_refused", "SMTP refusals", ["reason"], registry=r)
        self.delivered = Counter("mss_delivered", "Deliveries done", ["kind"], registry=r)
        self.deferred = Counter("mss_deferred", "Temporary delivery failures", ["kind"],
                                registry=r)
        self.bounced = Counter("mss_bounced", "Permanent failures and expiries (DSN)",
                               ["kind"], registry=r)
        self.tls_failures = Counter("mss_tls_failures", "TLS failures towards peers",
                                    ["peer"], registry=r)
        self.notify_failures = Counter("mss_notify_failures",
                                       "Notifications not handed to the smarthost", registry=r)
        self.latency = Histogram("mss_delivery_latency_seconds",
                                 "From acceptance to delivery", ["kind"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("mss_queue_depth", "Recipients waiting for delivery",
                                 registry=r)

    def watch_depth(self, read: Callable[[], float]) -> None:
        """Compute the queue depth at each scrape."""
        self.queue_depth.set_function(read)

    def serve(self, address: str, port: int) -> object | None:
        """Start the HTTP endpoint (port 0: disabled); the server, to shut it down."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
