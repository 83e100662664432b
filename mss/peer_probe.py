"""Checking the peers' health (issue #20): a ``mss.run.Service`` that probes every whitelisted
peer's relay each ``MSS_PEER_PROBE_SECONDS`` (``gateway.probe.check``), and the checking
function handed to the webmail for its "Vérifier maintenant" button.

Started with the gateway role, like the whitelist fetch: outbound work done by the process
that has the way out, in a thread of its own. Several gateway processes share one database:
each probes only the domains whose last result is older than the period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from core.db import Database
from core.errors import MssError
from core.settings import Settings
from gateway import probe
from peers import health
from peers.results import FAILURE_FR, Failure

if TYPE_CHECKING:
    from webmail.context import PeerCheck

log = logging.getLogger("mss.peers")
SCHEDULED = "planifié"

def checker(settings: Settings, db: Database) -> PeerCheck:
    """The webmail's checking function (``webmail.context.Webmail.peer_check``)."""

    def check(domain: str | None, login: str,
              details: Mapping[str, object]) -> list[tuple[str, bool, str]]:
        results = probe.check(db, settings, domains=None if domain is None else [domain],
                                    requested_by=login, actor=login, details=details)
        return [(r.domain, r.ok, _why(r.failure, r.detail)) for r in results]

    return check


def _why(failure: str, detail: str) -> str:
    if not failure:
        return ""
    return f"{FAILURE_FR[Failure(failure)]} ({detail[:200]})"


class PeerProber:
    """The scheduled probe as a service of ``mss run``; idle when the period is 0."""

    name = "pairs"

    def __init__(self, settings: Settings, db: Database, *, poll: float | None = None) -> None:
        self.settings, self.db = settings, db
        self.poll = poll if poll is not None else min(60.0, settings.peer_probe_seconds or 60)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.peer_probe_seconds:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mss-peers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A probe under way ends by its own bound (a few seconds); the thread is a daemon.
            self._thread.join(timeout=2)
            self._thread = None

    def endpoints(self) -> list[str]:
        seconds = self.settings.peer_probe_seconds
        if not seconds:
            return ["Santé des pairs : pas de vérification périodique (MSS_PEER_PROBE_SECONDS "
                    "= 0 ; « mss peers check » à la main ou par cron)"]
        return [f"Santé des pairs : relais des pairs vérifiés toutes les {seconds / 3600:g} h "
                "(TLS, certificat, DN de la liste blanche ; aucun message envoyé)"]

    def run_once(self) -> list[str] | None:
        """Probe the domains due; the failed ones, or None when none was due."""
        every = timedelta(seconds=self.settings.peer_probe_seconds)
        with self.db.read() as session:
            domains = health.due(session, self.settings.domain, every)
        if not domains:
            return None
        results = probe.check(self.db, self.settings, domains=domains,
                                    requested_by=SCHEDULED, actor="gateway")
        failed = [r.domain for r in results if not r.ok]
        log.log(logging.WARNING if failed else logging.INFO,
                "pairs : %d vérifié(s), %d en échec%s", len(results), len(failed),
                f" ({', '.join(failed[:10])})" if failed else "")
        return failed

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except MssError as exc:  # no operator certificate yet, a domain just removed…
                log.warning("pairs : vérification impossible : %s", exc.message)
            except Exception:  # never bring the service down; tried again at the next poll
                log.exception("pairs : vérification en échec")
            self._stop.wait(self.poll)
