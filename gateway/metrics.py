"""Relay metrics for Prometheus (``prometheus-client``), served on ``MSS_METRICS_PORT``.

One registry per ``GatewayService`` (several gateways can run in one test process). Labels
carry reasons, kinds and peer domains, never addresses or content. Alert rules and a Grafana
dashboard over these names are in ``deploy/`` (README, "Exploitation").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from certs import expiry
from mailstore import quota_usage
from peers.health import PeerState
from trust_space import whitelist_history

# Finer, for the parts of a delivery (issue #19: p99 submit → visible ≤ 250 ms).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)


class Metrics:
    """The gateway's counters (see the issue: accepted, refused by reason, delivered, deferred,
    bounced, queue depth, delivery latency, TLS failures by peer, notification failures)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # (process slot, exposition text) of the group's other processes (gateway.processes)
        self.others: Callable[[], list[tuple[str, str]]] | None = None
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
        # Where a delivery's time goes (Postfix's ``delays=``): ``queue``, from acceptance to
        # the start of its attempt (waiting for a worker, then behind the earlier messages of
        # its batch); ``attempt``, the LMTP or SMTP transaction; then, per batch, recording
        # the outcomes (one write transaction).
        self.stage = Histogram("mss_delivery_stage_seconds",
                               "Delivered: time in the queue and in the attempt",
                               ["kind", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.record_seconds = Histogram("mss_delivery_record_seconds",
                                        "Recording one batch's outcomes",
                                        buckets=STAGE_BUCKETS, registry=r)
        # A claim's own time (one write transaction, waiting for the database's write lock
        # behind the acceptances and the other workers' recordings included): ``found`` is
        # ``yes`` when it took something, ``no`` for an empty poll.
        self.claim_seconds = Histogram("mss_delivery_claim_seconds",
                                       "Claiming due recipients (one transaction)", ["found"],
                                       buckets=STAGE_BUCKETS, registry=r)
        self.handed = Counter("mss_delivery_handed_total",
                              "Messages handed to an idle worker at acceptance, claimed in "
                              "the DATA transaction (no claim of their own)", registry=r)
        self.rings = Counter("mss_queue_rings_total",
                             "Rings of the queue's doorbell (spool.doorbell): sent for a "
                             "message no worker of this process could take, heard from "
                             "another process", ["direction"], registry=r)
        for direction in ("sent", "heard"):  # shown at 0 from the start
            self.rings.labels(direction)
        self.workers_idle = Gauge("mss_delivery_workers_idle",
                                  "Delivery workers of this process waiting for work",
                                  registry=r)
        self.queue_depth = Gauge("mss_queue_depth", "Recipients waiting for delivery",
                                 registry=r)
        self.queue_oldest = Gauge("mss_queue_oldest_age_seconds",
                                  "Age of the oldest message still waiting (0: queue empty)",
                                  registry=r)
        self._certificates: CertificateCollector | None = None
        self.whitelist = WhitelistCollector()
        self.registry.register(self.whitelist)
        self.peers = PeerCollector()
        self.registry.register(self.peers)
        self.quota = QuotaCollector()
        self.registry.register(self.quota)

    def watch_depth(self, read: Callable[[], float]) -> None:
        """Compute the queue depth at each scrape."""
        self.queue_depth.set_function(read)

    def watch_oldest(self, read: Callable[[], float]) -> None:
        """Compute the oldest waiting message's age at each scrape."""
        self.queue_oldest.set_function(read)

    def watch_certificates(self, pki_dir: Path) -> None:
        """Export our certificates' and CRL's days left, read at each scrape (a few small
        files: a certificate renewed on disk shows at the next scrape, without a restart)."""
        if self._certificates is None:
            self._certificates = CertificateCollector(pki_dir)
            self.registry.register(self._certificates)

    def watch_whitelist(self, read: Callable[[], whitelist_history.Status]) -> None:
        """Export the followed whitelist's state, read from the database at each scrape."""
        self.whitelist.read = read

    def watch_peers(self, read: Callable[[], list[PeerState]]) -> None:
        """Export the peers' last probe results, read from the database at each scrape."""
        self.peers.read = read

    def watch_quota(self, read: Callable[[], quota_usage.Summary | None]) -> None:
        """Export how full the mailboxes are (``mailstore.quota_usage.QuotaWatch``: cached,
        refreshed in the background, so a scrape never waits for doveadm)."""
        self.quota.read = read

    def serve(self, address: str, port: int) -> WSGIServer | None:
        """Start the HTTP endpoint (port 0: disabled); the server, to shut it down."""
        if not port:
            return None
        exposed = cast(CollectorRegistry, Merged(self)) if self.others else self.registry
        server, _thread = start_http_server(port, addr=address, registry=exposed)
        return server

    def serve_local(self) -> WSGIServer:
        """This process's counters on 127.0.0.1, a port chosen by the system (an acceptor of
        ``gateway.processes``: its group's first process merges them into its endpoint)."""
        server, _thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        return server


class Merged:
    """The endpoint of a group of gateway processes (``gateway.processes``): this process's
    metrics, and the counters and histograms of the others, read from their local endpoints
    at each scrape. Every sample of a metric the other processes have carries a ``process``
    label (0 for this one, the slot for the others): each process's counters stay separate
    series, so that one process started again (its counters back to 0) reads as that series'
    reset, which ``rate()`` handles, not as a drop of a sum. An acceptor that does not answer
    (restarting) has no samples at that scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        others: dict[str, list[tuple[str, Metric]]] = {}
        for slot, text in self.metrics.others() if self.metrics.others else []:
            for family in text_string_to_metric_families(text):
                others.setdefault(family.name, []).append((slot, family))
        for family in self.metrics.registry.collect():
            theirs = others.get(family.name)
            if theirs:
                family.samples = [_labelled(sample, "0") for sample in family.samples]
                for slot, other in theirs:
                    family.samples += [_labelled(sample, slot) for sample in other.samples]
            yield family


def _labelled(sample: Sample, process: str) -> Sample:
    return sample._replace(labels={**sample.labels, "process": process})


class CertificateCollector(Collector):
    """``mss_certificate_expiry_days{certificate}`` (server, operator, issuing_ca, root_ca)
    and ``mss_crl_next_update_days``, from ``certs.expiry``; an unreadable file has no sample
    (the ``MssCertificatIllisible`` rule of ``deploy/prometheus/alerts.yml`` sees it)."""

    def __init__(self, pki_dir: Path) -> None:
        self.pki_dir = pki_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        certs = GaugeMetricFamily("mss_certificate_expiry_days",
                                  "Days before our certificate expires (negative: expired)",
                                  labels=["certificate"])
        crl = GaugeMetricFamily("mss_crl_next_update_days",
                                "Days before the CRL's nextUpdate (negative: stale)")
        for found in expiry.status(self.pki_dir):
            if found.days is None:
                continue
            if found.label == "crl":
                crl.add_metric([], found.days)
            else:
                certs.add_metric([found.label], found.days)
        yield certs
        yield crl


class WhitelistCollector(Collector):
    """The whitelist followed from its URL (issue #20), from the database (every gateway
    replica says the same; the rules take max()): ``mss_whitelist_warnings{kind}`` (DN changed,
    domain removed, not yet acknowledged on the operator's page), ``mss_whitelist_fetch_failures``
    (failed fetches since the last good one) and
    ``mss_whitelist_last_success_timestamp_seconds`` (no sample before the first good one)."""

    def __init__(self) -> None:
        self.read: Callable[[], whitelist_history.Status] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        warnings = GaugeMetricFamily("mss_whitelist_warnings", "Whitelist changes to look at "
                                     "(peer DN changed, domain removed), not acknowledged",
                                     labels=["kind"])
        failures = GaugeMetricFamily("mss_whitelist_fetch_failures",
                                     "Failed whitelist fetches since the last good one")
        success = GaugeMetricFamily("mss_whitelist_last_success_timestamp_seconds",
                                    "When the whitelist was last fetched successfully")
        if self.read is not None:
            found = self.read()
            for kind, count in found.open_by_kind.items():
                warnings.add_metric([kind], count)
            failures.add_metric([], found.failures_in_a_row)
            if found.last_good_at is not None:
                success.add_metric([], found.last_good_at.timestamp())
        yield warnings
        yield failures
        yield success


class PeerCollector(Collector):
    """The peers' health (issue #20), from the last probe of each whitelisted domain
    (``peers.health.states``; every gateway replica says the same, the rules take
    max/min): ``mss_peer_probe_success{peer}`` (1: reached, certificate valid and matching
    the whitelist), ``mss_peer_probe_timestamp_seconds{peer}``,
    ``mss_peer_probe_failures_in_a_row{peer}``, and when a certificate was seen
    ``mss_peer_certificate_expiry_days{peer}`` and ``mss_peer_dn_match{peer}``. A domain
    never probed has no sample."""

    def __init__(self) -> None:
        self.read: Callable[[], list[PeerState]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        success = GaugeMetricFamily("mss_peer_probe_success", "Last probe of the peer's relay "
                                    "succeeded (TLS, chain, revocation, whitelist DN)",
                                    labels=["peer"])
        when = GaugeMetricFamily("mss_peer_probe_timestamp_seconds",
                                 "When the peer's relay was last probed", labels=["peer"])
        in_a_row = GaugeMetricFamily("mss_peer_probe_failures_in_a_row",
                                     "Failed probes of the peer since its last good one",
                                     labels=["peer"])
        days = GaugeMetricFamily("mss_peer_certificate_expiry_days", "Days before the peer "
                                 "relay's certificate expires (negative: expired)",
                                 labels=["peer"])
        match = GaugeMetricFamily("mss_peer_dn_match", "The peer relay's certificate subject "
                                  "DN equals the whitelist's (1) or not (0)", labels=["peer"])
        for state in self.read() if self.read is not None else []:
            success.add_metric([state.domain], 1.0 if state.ok else 0.0)
            when.add_metric([state.domain], state.at.timestamp())
            in_a_row.add_metric([state.domain], state.failures_in_a_row)
            if state.days_left is not None:
                days.add_metric([state.domain], round(state.days_left, 3))
            if state.dn_match is not None:
                match.add_metric([state.domain], 1.0 if state.dn_match else 0.0)
        yield from (success, when, in_a_row, days, match)


class QuotaCollector(Collector):
    """``mss_mailboxes_quota_over{threshold="80|90|100"}`` (mailboxes at or over that percentage
    of their quota) and ``mss_mailbox_quota_max_ratio`` (the fullest one's used/limit), from
    ``doveadm quota get -A`` at most every 5 minutes. Counts only: never an address. No sample
    while the mail store cannot be read (doveadm missing, Dovecot not running on this host)."""

    def __init__(self) -> None:
        self.read: Callable[[], quota_usage.Summary | None] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        over = GaugeMetricFamily("mss_mailboxes_quota_over", "Mailboxes at or over this "
                                 "percentage of their quota", labels=["threshold"])
        ratio = GaugeMetricFamily("mss_mailbox_quota_max_ratio",
                                  "Used/limit of the fullest mailbox (1: full)")
        found = self.read() if self.read is not None else None
        if found is not None:
            for threshold, count in sorted(found.over.items()):
                over.add_metric([str(threshold)], count)
            ratio.add_metric([], found.max_ratio)
        yield over
        yield ratio
