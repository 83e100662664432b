"""The gateway as a ``mss.run.Service``: listeners, delivery workers, metrics endpoint."""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIServer

from cryptography import x509

from core.db import Database, utcnow
from core.errors import ConfigError
from core.settings import Settings
from gateway.accept.context import DirectoryWatch, Gateway, Trust
from gateway.accept.keys import KeyRing
from gateway.deliver.notify import notifier_for
from gateway.deliver.outbound import Outbound
from gateway.deliver.probes import probe_for
from gateway.deliver.workers import Deliverer, Workers
from gateway.metrics import Metrics
from gateway.smtp import tls
from gateway.smtp.listeners import Listeners
from mailstore import quota_usage, stores
from mailstore.config import DovecotPaths
from peers import health
from spool import queue as q
from spool.doorbell import doorbell_for
from trust_space import whitelist_history

log = logging.getLogger("mss.gateway")

SMTP_WORK_THREADS = 8  # blocking work of the SMTP sessions (policy, signing, spooling)


def db_connections(settings: Settings) -> int:
    """Database connections one gateway process may hold at once: each delivery worker, each
    SMTP work thread, and the directory watch / metrics refresh."""
    return settings.queue_workers + SMTP_WORK_THREADS + 2


class GatewayService:
    """``start`` binds the three SMTP ports and starts ``queue_workers`` delivery threads."""

    name = "gateway"

    def __init__(self, settings: Settings, db: Database, *, workers: int | None = None,
                 listen: bool = True, reuse_port: bool = False, metrics: bool = True) -> None:
        self.settings, self.db = settings, db
        self.metrics = Metrics()
        self.workers_count = settings.queue_workers if workers is None else workers
        self.listen, self.reuse_port, self.serve_metrics = listen, reuse_port, metrics
        self.watch: DirectoryWatch | None = None
        self.gw: Gateway | None = None
        self.listeners: Listeners | None = None
        self.workers: Workers | None = None
        self.deliverer: Deliverer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http: WSGIServer | None = None

    def start(self) -> None:
        """Raises ConfigError: certificates missing, a port taken."""
        s = self.settings
        for name in ("server.crt", "operator.crt", "ca.pem"):
            if not (s.pki_dir / name).exists():
                raise ConfigError(f"{s.pki_dir / name} absent : lancez « mss init »")
        trust = Trust(s.pki_dir)
        issuing = s.pki_dir / "issuing.pem"
        chain = [x509.load_pem_x509_certificate(issuing.read_bytes())] if issuing.exists() else []
        self.gw = Gateway(s, self.db, KeyRing(s.secret()), trust, chain=chain)
        self.deliverer = self._deliverer(self.gw, trust)
        self.workers = Workers(self.deliverer, self.workers_count, owner=socket.gethostname(),
                               bell=doorbell_for(self.db, s.run_dir))
        self.gw.dispatch = workers = self.workers
        self.metrics.workers_idle.set_function(lambda: workers.idle)
        # The database pool is sized for these and the delivery workers (db_connections).
        self._pool = ThreadPoolExecutor(max_workers=SMTP_WORK_THREADS,
                                        thread_name_prefix="smtp-work")
        if self.listen:
            self.listeners = Listeners(self.gw, self.metrics, self._pool,
                                       reuse_port=self.reuse_port)
            try:
                self.listeners.start()
            except OSError as exc:
                self.stop()
                raise ConfigError(f"port SMTP indisponible : {exc.strerror}") from exc
        self.workers.start()
        if s.policy_cache_seconds > 0:
            self.watch = DirectoryWatch(self.db, self.gw.decisions)
            self.watch.start()
        if not self.serve_metrics:  # another process of the group serves them
            return
        self.metrics.watch_depth(self._depth)
        self.metrics.watch_oldest(self._oldest_age)
        self.metrics.watch_certificates(s.pki_dir)
        self.metrics.watch_whitelist(self._whitelist)
        self.metrics.watch_peers(self._peers)
        paths = DovecotPaths.from_settings(s)
        self.metrics.watch_quota(quota_usage.QuotaWatch(lambda: quota_usage.read_all(paths))
                                 .current)
        try:
            self._http = self.metrics.serve(s.listen_address, s.metrics_port)
        except OSError as exc:
            log.warning("métriques indisponibles sur le port %s : %s", s.metrics_port, exc)

    def _deliverer(self, gw: Gateway, trust: Trust) -> Deliverer:
        s = self.settings
        outbound = Outbound(self.db, s.hostname, lambda: tls.peer_client_context(s),
                            trust.store)
        notifier = notifier_for(s.smarthost, s.hostname, s.data_dir)
        return Deliverer(gw, self.metrics, lmtp=stores.lmtp_for(s, self.db), outbound=outbound,
                         notifier=notifier, probe=probe_for(s))

    def _depth(self) -> float:
        with self.db.read() as session:
            return float(q.depth(session))

    def _oldest_age(self) -> float:
        with self.db.read() as session:
            oldest = q.oldest_pending(session)
        return max((utcnow() - oldest).total_seconds(), 0.0) if oldest is not None else 0.0

    def _whitelist(self) -> whitelist_history.Status:
        with self.db.read() as session:
            return whitelist_history.status(session)

    def _peers(self) -> list[health.PeerState]:
        with self.db.read() as session:
            return health.states(session, self.settings.domain)

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.listeners.ports) if self.listeners else {}

    def endpoints(self) -> list[str]:
        s = self.settings
        lines = [f"SMTP {name:12} {s.listen_address}:{port}" for name, port in self.ports.items()]
        if s.metrics_port and self.serve_metrics:
            lines.append(f"métriques        http://{s.listen_address}:{s.metrics_port}/metrics")
        return lines

    def stop(self) -> None:
        if self.listeners is not None:
            self.listeners.stop()
            self.listeners = None
        if self.workers is not None:
            self.workers.stop()
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
