"""The national directory feed's sender (issue #20): a ``mss.run.Service`` whose one thread
leases the due rows of ``directory_feed``, sends each FHIR Patch to ``MSS_ANNUAIRE_URL`` and
records the answer. What to send, in which order and what an answer means is
``trust_space.annuaire``'s; this module only speaks HTTP.

Why its own service, started with the gateway role (``mss run --role gateway`` and ``all``):
like the relay's delivery workers it is outbound work with retries, done by whichever process
has the network way out; a thread of its own keeps it apart from aiosmtpd's event loop and
gives it its own start line and clean stop. Several gateway processes may run it: the lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL) hands each row to one of them.

HTTP: one ``requests`` session, ``trust_env`` off (``REQUESTS_CA_BUNDLE`` or a proxy from the
environment would silently replace our choices), the endpoint's CA (``MSS_ANNUAIRE_CA_FILE``,
else the system's), our client pair for mutual TLS and/or a bearer token. Neither the token
nor the body is ever logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from datetime import datetime

import requests

from core.db import Database
from core.settings import Settings
from trust_space import annuaire

log = logging.getLogger("mss.annuaire")
TIMEOUT = 15.0  # seconds per request
POLL_SECONDS = 5.0  # between rounds when nothing was due
LEASE_SECONDS = 120.0  # longer than a request with its timeout
FHIR_JSON = "application/fhir+json"
_tokens = itertools.count()


def http_session(settings: Settings) -> requests.Session:
    """The session to the national directory (see the module docstring)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.annuaire_ca_file or True
    if settings.annuaire_client_cert and settings.annuaire_client_key:
        session.cert = (settings.annuaire_client_cert, settings.annuaire_client_key)
    session.headers.update({"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON})
    if settings.annuaire_token:
        session.headers["Authorization"] = f"Bearer {settings.annuaire_token}"
    return session


def _printable(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _answer(response: requests.Response) -> str:
    """``"404 Not Found — <the OperationOutcome's first diagnostics>"``, short and printable."""
    words = f"{response.status_code} {response.reason or ''}".strip()
    try:
        issue = (response.json().get("issue") or [{}])[0]
        detail = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
    except (ValueError, AttributeError, TypeError, IndexError):
        detail = ""
    if detail:
        words += f" — {detail}"
    return _printable(words)[:300]


def send(http: requests.Session, base_url: str,
         patch: annuaire.Claimed) -> tuple[int | None, str]:
    """PATCH one row: ``(status, answer)``; status None when no answer came."""
    url = f"{base_url.rstrip('/')}/{patch.resource}"
    try:
        response = http.patch(url, params={"identifier": patch.identifier},
                              data=patch.body.encode("utf-8"), timeout=TIMEOUT,
                              allow_redirects=False)
    except requests.RequestException as exc:
        return None, _printable(f"pas de réponse ({type(exc).__name__}) : {exc}")[:300]
    with response:
        return response.status_code, _answer(response)


def run_once(db: Database, settings: Settings, http: requests.Session, *, owner: str,
             now: datetime | None = None, limit: int = 10) -> int:
    """One round: lease due rows, send them in order, record each answer; how many were sent."""
    token = f"{owner}:{os.getpid()}:{next(_tokens)}"[:64]
    with db.transaction() as session:
        claimed = annuaire.claim(session, token, limit=limit, lease_seconds=LEASE_SECONDS,
                                 now=now)
    for patch in claimed:
        status, answer = send(http, settings.annuaire_url, patch)
        with db.transaction() as session:
            state = annuaire.record_answer(session, patch, status, answer, now=now,
                                           retry_base=settings.annuaire_retry_base_seconds)
        log.info("annuaire national : envoi %s (%s) → %s %s", patch.id, patch.address,
                 status if status is not None else "sans réponse", state or "bail perdu")
    return len(claimed)


class AnnuaireFeed:
    """The feed as a service of ``mss run``; does nothing when ``MSS_ANNUAIRE_URL`` is empty."""

    name = "annuaire"

    def __init__(self, settings: Settings, db: Database, *,
                 interval: float = POLL_SECONDS) -> None:
        self.settings, self.db, self.interval = settings, db, interval
        self.owner = f"annuaire@{socket.gethostname()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: requests.Session | None = None

    def start(self) -> None:
        if not self.settings.annuaire_url:
            return
        self._http = http_session(self.settings)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mss-annuaire", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT + 5)
            self._thread = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def endpoints(self) -> list[str]:
        if not self.settings.annuaire_url:
            return ["Annuaire national : flux désactivé (MSS_ANNUAIRE_URL vide ; les événements "
                    "attendent dans « mss annuaire status »)"]
        return [f"Annuaire national : PATCH FHIR vers {self.settings.annuaire_url}"]

    def _loop(self) -> None:
        assert self._http is not None
        while not self._stop.is_set():
            try:
                sent = run_once(self.db, self.settings, self._http, owner=self.owner)
            except Exception:  # the feed must never bring the service down; retried next round
                log.exception("annuaire national : tour d'envoi en échec")
                sent = 0
            if not sent:
                self._stop.wait(self.interval)

