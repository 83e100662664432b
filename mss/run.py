"""`mss run`: start the services of a role, print where they listen, stop them cleanly.

Each package that runs something offers a ``Service`` (below); ``SERVICES`` says which role starts
which. Later packages (gateway, webmail) add themselves here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from mss.app import App

log = logging.getLogger("mss.run")

ROLES = ("all", "mailstore", "gateway", "webmail")


class Service(Protocol):
    """Something `mss run` starts and stops.

    Raises:
        core.errors.MssError: from ``start`` when the service cannot come up (port taken,
            missing package…), with a message an operator can act on.
    """

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def endpoints(self) -> list[str]:
        """Human lines: what listens where (printed at start-up)."""
        ...


def _mailstore(app: App) -> Service:
    from mailstore.service import DovecotService

    return DovecotService(app.settings, app.db)


def _gateway(app: App) -> Service:
    # MSS_GATEWAY_PROCESSES processes sharing the SMTP ports (see gateway/processes.py).
    from gateway.processes import GatewayGroup

    return GatewayGroup(app.settings, app.db)


def _annuaire(app: App) -> Service:
    # The national directory feed goes with the gateway: outbound work with retries, like the
    # delivery workers (see mss/annuaire.py).
    from mss.annuaire import AnnuaireFeed

    return AnnuaireFeed(app.settings, app.db)


def _whitelist(app: App) -> Service:
    # Following the MSSanté whitelist from its URL goes with the gateway too (see
    # mss/whitelist_fetch.py).
    from mss.whitelist_fetch import WhitelistFollower

    return WhitelistFollower(app.settings, app.db)


def _peers(app: App) -> Service:
    # Probing the peers' relays goes with the gateway too (see mss/peer_probe.py).
    from mss.peer_probe import PeerProber

    return PeerProber(app.settings, app.db)


def _webmail(app: App) -> Service:
    from core.mailer import outbound_mailer
    from mss.peer_probe import checker
    from webmail.service import WebmailService

    return WebmailService(app.settings, app.db, mailer=outbound_mailer(app.settings),
                          peer_check=checker(app.settings, app.db))


# role → factories, in start order
SERVICES: dict[str, list[Callable[[App], Service]]] = {
    "mailstore": [_mailstore],
    "gateway": [_gateway, _annuaire, _whitelist, _peers],
    "webmail": [_webmail],
}


def _psc_standin(app: App) -> Service:
    from mss.psc_standin import PscStandIn

    return PscStandIn(app)


def services_for(role: str, app: App | None = None) -> list[Callable[[App], Service]]:
    """The role's factories in start order; with ``app`` whose settings name a local Pro Santé
    Connect stand-in port (the demo's), the stand-in first for the roles that log people in."""
    if role == "all":
        found = [f for r in ("mailstore", "gateway", "webmail") for f in SERVICES[r]]
    else:
        found = list(SERVICES[role])
    if app is not None and app.settings.oidc_standin_port and role in ("all", "webmail"):
        found.insert(0, _psc_standin)
    return found


MAINTENANCE_INTERVAL = 3600.0  # seconds between housekeeping rounds
BACKGROUND_CONNECTIONS = 4  # Dovecot's hook server, housekeeping, directory feed, whitelist


def db_connections(app: App, roles: Iterable[str]) -> int:
    """How many threads of this process may use the database at once with ``roles`` running:
    the pool is sized for that, so that none waits for a connection under load (issue #19)."""
    roles = set(roles)
    total = BACKGROUND_CONNECTIONS
    if roles & {"all", "gateway"}:
        from gateway.service import db_connections as gateway

        total += gateway(app.settings)
    if roles & {"all", "webmail"}:
        from webmail.service import db_connections as webmail

        total += webmail(app.settings)
    return total


def _maintain(app: App, services: list[Service]) -> None:
    """Hourly housekeeping: keep the CRL fresh and make the services reload it."""
    from mss.setup import refresh_crl_if_due

    try:
        with app.db.transaction() as session:
            renewed = refresh_crl_if_due(app.pki, session)
    except Exception:  # housekeeping must never bring the services down
        log.exception("renouvellement de la CRL en échec")
        return
    if renewed:
        log.info("CRL renouvelée")
        for service in services:
            reload = getattr(service, "reload", None)
            if callable(reload):
                reload()


def run(app: App, role: str, *, ready: Callable[[list[Service]], None] | None = None,
        stop_event: threading.Event | None = None) -> None:
    """Start the role's services, call ``ready``, block until SIGTERM/SIGINT (or ``stop_event``),
    then stop them in reverse order."""
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    started: list[Service] = []
    app.size_pool(db_connections(app, [role]))
    try:
        for factory in services_for(role, app):
            service = factory(app)
            service.start()
            started.append(service)
        if ready:
            ready(started)
        while not stop.wait(MAINTENANCE_INTERVAL):
            _maintain(app, started)
    finally:
        for service in reversed(started):
            try:
                service.stop()
            except Exception:  # one failing stop must not keep the others running
                log.exception("arrêt de %s en échec", service.name)
