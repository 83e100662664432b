"""Two operators on one machine that know each other: ``mss demo --pair`` and the two-operator
tests set them up, link them and run them with the functions below (one way, not two).

- ``prepare(a, b)``: each data directory gets the demo's own trust space (``setup_demo``, the
  Pro Santé Connect stand-in written into its mss.toml like ``mss demo`` does), then ``link``
  both ways. Idempotent: a second call reuses both directories (CA, keys, passwords, TOTP).
- ``link(a, b)``: ``b`` learns ``a`` through the same domain functions as the commands an
  operator would type (whitelist export/import, ``peer trust``, ``whitelist route``,
  ``directory export``/``import-peer``), each audited as those commands are.
- ``start``/``stop`` one operator's services (``mss.run.services_for``, any roles);
  ``serve(apps)`` runs both until SIGINT/SIGTERM (or an event), as ``mss run`` runs one.

The two run in this one process (threads), not as two ``mss run`` children: the tests need
the operators' service objects (the gateway's metrics, a hop captured in the relay), one
signal handler stops both with nothing to forward or reap, and each Dovecot is already a
supervised child of its ``DovecotService``.

The second operator (``autre.test``) lives beside the first one's data directory
(``<data>-autre.test``) with its own port set, written once into its mss.toml, and the host
name 127.0.0.1: browsers keep cookies per host name, not per port, so two webmails (and two
Pro Santé Connect stand-ins) on ``localhost`` would overwrite each other's session.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select

from core import audit
from core.errors import ConfigError
from core.settings import Settings
from mss.app import App
from mss.run import MAINTENANCE_INTERVAL, Service, _maintain, db_connections, services_for

log = logging.getLogger("mss.pair")

AUTRE_DOMAIN = "autre.test"
AUTRE_NAME = "Autre opérateur de démonstration"
AUTRE_HOSTNAME = "127.0.0.1"  # not localhost: see the module docstring (cookies)
# The demo's fixed ports plus one, easy to tell from the first operator's.
AUTRE_PORTS: dict[str, int] = {
    "web_port": 8444, "oidc_standin_port": 9444, "imaps_port": 9931, "imap_port": 1144,
    "managesieve_port": 4191,
    "submission_port": 5871, "submissions_port": 4651, "relay_port": 2526,
    "metrics_port": 9101,
}
PORT_SETTINGS = tuple(AUTRE_PORTS)
# What the second operator takes from the environment: nothing that would make it share a
# port, a database, a domain or a data directory with the first one.
CARRIED_ENV = ("MSS_DEMO_PASSWORD", "MSS_LOG_LEVEL", "MSS_SOFTHSM2_MODULE")
ROLES = ("mailstore", "gateway", "webmail")
ACTOR = "mss-cli"
SIGNAL_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class Side:
    """How to make one operator of the pair. ``None`` fields come from its settings (mss.toml,
    ``MSS_*`` of ``environ``, defaults); given ones are written into a *new* mss.toml only (an
    existing one is the operator's and is kept)."""

    data_dir: Path
    domain: str | None = None
    operator_name: str | None = None
    hostname: str | None = None
    ports: Mapping[str, int] | None = None  # keys of PORT_SETTINGS
    environ: Mapping[str, str] | None = None  # None: this process's environment


def autre_dir(data_dir: Path) -> Path:
    """The second operator's data directory, beside the first one's: ``<data>-autre.test``."""
    base = data_dir.resolve()
    return base.with_name(f"{base.name}-{AUTRE_DOMAIN}")


def carried(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` the second operator takes (``CARRIED_ENV``)."""
    return {k: v for k, v in environ.items() if k in CARRIED_ENV}


def demo_sides(data_dir: Path | None, domain: str | None = None, *,
               ports: tuple[Mapping[str, int] | None, Mapping[str, int] | None] = (None, None),
               environ: Mapping[str, str] | None = None) -> tuple[Side, Side]:
    """The pair of ``mss demo --pair``: the first operator where ``mss demo`` would put it
    (``--data-dir``/``MSS_DATA_DIR``, its settings as usual), ``autre.test`` beside it with
    ``AUTRE_PORTS``. Tests give both port sets and an environment (``{}``: none of theirs)."""
    env = os.environ if environ is None else environ
    first = Path(data_dir or env.get("MSS_DATA_DIR") or Settings.data_dir).resolve()
    return (Side(first, domain=domain, ports=ports[0], environ=env),
            Side(autre_dir(first), AUTRE_DOMAIN, AUTRE_NAME, AUTRE_HOSTNAME,
                 ports[1] or AUTRE_PORTS, carried(env)))


# ---------------------------------------------------------------------- set-up
def write_toml(side: Side) -> None:
    """The mss.toml of a new data directory, with what ``side`` gives (the stand-in's port
    excepted: ``enable_in_toml`` writes it with the other ``oidc_*`` settings)."""
    toml = side.data_dir / "mss.toml"
    values: dict[str, object] = {"domain": side.domain, "operator_name": side.operator_name,
                                 "hostname": side.hostname}
    values.update({k: v for k, v in (side.ports or {}).items() if k != "oidc_standin_port"})
    values = {k: v for k, v in values.items() if v is not None}
    if toml.exists() or not values:
        return
    if not side.data_dir.exists():
        side.data_dir.mkdir(parents=True, mode=0o750)  # as `mss init` makes it
    lines = ["# mss settings for this data directory (see README, \"Settings\"), written by",
             "# `mss demo --pair`. MSS_* environment variables override what is written here."]
    lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()]
    toml.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load(side: Side, **overrides: object) -> App:
    """The operator's App as its mss.toml, ``side.environ`` and ``overrides`` make it."""
    return App(Settings.load(data_dir=side.data_dir, environ=side.environ, **overrides))


def _standin_port(side: Side, settings: Settings) -> int:
    from mss.psc_standin import DEFAULT_PORT

    # Already configured (mss.toml, MSS_OIDC_STANDIN_PORT) first: enable_in_toml keeps it.
    given = (side.ports or {}).get("oidc_standin_port")
    return int(settings.oidc_standin_port or given or DEFAULT_PORT)


def _ports(settings: Settings, standin: int) -> dict[int, str]:
    used = {getattr(settings, name): name for name in PORT_SETTINGS if name != "oidc_standin_port"}
    used[standin] = "oidc_standin_port"
    return {port: name for port, name in used.items() if port}


def _check_apart(apps: list[App], standins: list[int]) -> None:
    """Raises ConfigError when the two operators would share a domain or a port."""
    a, b = (app.settings for app in apps)
    if a.domain == b.domain:
        raise ConfigError(f"les deux opérateurs ont le même domaine ({a.domain}) : "
                          f"{a.data_dir}, {b.data_dir}")
    pa, pb = _ports(a, standins[0]), _ports(b, standins[1])
    shared = sorted(set(pa) & set(pb))
    if shared:
        port = shared[0]
        raise ConfigError(f"{a.domain} et {b.domain} utilisent tous deux le port {port} "
                          f"({pa[port]}, {pb[port]}) : changez-le dans {b.data_dir / 'mss.toml'}")


def prepare(a: Side, b: Side, **overrides: object) -> tuple[App, App]:
    """Both operators ready to run and linked both ways (see the module docstring); returns
    their Apps, loaded again after the set-up wrote their mss.toml. ``overrides``: settings
    for both (tests).

    Raises:
        ConfigError: a shared domain or port, or a setting no component could use.
    """
    from mss.demo import setup_demo
    from mss.psc_standin import enable_in_toml

    sides = (a, b)
    for side in sides:
        write_toml(side)
    apps = [load(side, **overrides) for side in sides]
    standins = [_standin_port(side, app.settings) for side, app in zip(sides, apps, strict=True)]
    _check_apart(apps, standins)
    for app, port in zip(apps, standins, strict=True):
        try:
            setup_demo(app)
            enable_in_toml(app.settings, port)
        finally:
            app.close()
    first, second = (load(side, **overrides) for side in sides)
    link(first, second)
    link(second, first)
    return first, second


# ---------------------------------------------------------------------- link
def link(a: App, b: App) -> None:
    """``b`` learns ``a``, as an operator does with the commands (same domain functions, same
    audit records), idempotent:

    1. ``a``'s whitelist entry (``mss whitelist export`` at a, ``import --merge`` at b,
       kept in b's whitelist history);
    2. ``a``'s CA and CRL trusted (``mss peer trust --name DOMAIN ca.pem crl.pem`` at b);
    3. the route to ``a``'s relay (``mss whitelist route DOMAIN HOST:PORT`` at b);
    4. ``a``'s published directory with its S/MIME certificates (``mss directory export`` at
       a, ``mss directory import-peer FILE --domain DOMAIN`` at b).
    """
    _import_entry(a, b)
    trust_peer(a, b)
    _route(a, b)
    _import_directory(a, b)


def whitelist_entry(app: App) -> bytes:
    """``app``'s own whitelist entry as a whitelist file (``mss whitelist export``)."""
    from trust_space.whitelist import export_whitelist, local_entry

    cert_path = app.settings.pki_dir / "operator.crt"
    if not cert_path.exists():
        raise ConfigError("certificat d'opérateur absent : lancez d'abord « mss init »")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    # DateMAJ: when the entry's DN came to be, so that linking again changes nothing (and
    # leaves no empty change in the peer's whitelist history).
    own = local_entry(app.settings.domain, cert.subject.rfc4514_string(),
                      description=app.settings.operator_name,
                      updated_at=cert.not_valid_before_utc)
    with app.db.transaction() as session:
        return export_whitelist(session, own=[own], include_peers=False)


def _import_entry(a: App, b: App) -> None:
    from trust_space.whitelist_history import apply_whitelist

    data = whitelist_entry(a)
    with b.db.transaction() as session:
        applied = apply_whitelist(session, data, actor="mss demo --pair",
                                  source=f"{a.settings.domain}.xml", replace=False,
                                  local_domains=b.local_domains)
        diff = applied.diff
        audit.record(session, actor=ACTOR, action="whitelist.import", target=a.settings.domain,
                     outcome="ok", request={"added": len(diff.added), "removed": 0,
                                            "changed": len(diff.changed),
                                            "change": applied.change_id})


def trust_peer(a: App, b: App) -> bool:
    """``b`` trusts ``a``'s CA and its current CRL (``mss peer trust``, same file names);
    True when a file changed (then audited). Run again when ``a`` renews its CRL."""
    from certs.validation import TrustStore

    peers = b.settings.pki_dir / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    name, changed = a.settings.domain, []
    for index, source in enumerate((a.settings.pki_dir / "ca.pem", a.settings.pki_dir / "crl.pem")):
        data = source.read_bytes()
        if index == 0:
            TrustStore.from_pem(data)  # a readable bundle with a root, or ConfigError
        target = peers / f"{name}-{index}.pem"
        if not target.exists() or target.read_bytes() != data:
            shutil.copyfile(source, target)
            changed.append(source.name)
    if changed:
        with b.db.transaction() as session:
            audit.record(session, actor=ACTOR, action="peer.trust", target=name, outcome="ok",
                         request={"files": changed})
    return bool(changed)


def relay_address(settings: Settings) -> tuple[str, int]:
    """Where a peer on this machine reaches this operator's relay."""
    host = settings.listen_address
    if host in ("", "*", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if not settings.relay_port:
        raise ConfigError(f"{settings.domain} : port de relais non fixé (MSS_RELAY_PORT)")
    return host, settings.relay_port


def _route(a: App, b: App) -> None:
    from trust_space.models import TrustedDomain

    host, port = relay_address(a.settings)
    with b.db.transaction() as session:
        entry = session.scalar(select(TrustedDomain)
                               .where(TrustedDomain.domain == a.settings.domain))
        if entry is None:
            raise ConfigError(f"domaine {a.settings.domain} absent de la liste blanche")
        entry.relay_host, entry.relay_port = host, port
        audit.record(session, actor=ACTOR, action="whitelist.route", target=entry.domain,
                     outcome="ok", request={"host": host, "port": port})


def _import_directory(a: App, b: App) -> None:
    from trust_space.fhir import export_directory, import_directory
    from trust_space.models import TrustedDomain

    domain = a.settings.domain
    with a.db.transaction() as session:
        bundle = export_directory(session, domain=domain)
    with b.db.transaction() as session:
        entry = session.scalar(select(TrustedDomain).where(TrustedDomain.domain == domain))
        if entry is None:
            raise ConfigError(f"domaine {domain} absent de la liste blanche")
        result = import_directory(session, bundle, operator=entry.operator, replace=True)
        audit.record(session, actor=ACTOR, action="directory.import_peer", target=domain,
                     outcome="ok", request={"created": result.created,
                                            "updated": result.updated,
                                            "removed": result.removed})


# ---------------------------------------------------------------------- running
@dataclass
class Running:
    """One operator of the pair, running: its App and its started services (start order)."""

    app: App
    services: list[Service]

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def service(self, name: str) -> Service:
        """The started service called ``name`` ("mailstore", "gateway", "webmail"…)."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)


# Services are built one at a time, and started side by side (``start_both``): building the
# webmail compiles its URL rules with ``ast.parse`` (werkzeug), and CPython 3.11.7 raised
# "SystemError: AST constructor recursion depth mismatch" from two threads parsing at once
# (seen in CI, test_demo_pair; CPython gh-106905).
_BUILDING = threading.Lock()


def start(app: App, roles: Iterable[str] = ROLES) -> Running:
    """Start ``app``'s services of ``roles`` in order (as ``mss run`` does); on a failure the
    ones already started are stopped and the error is raised."""
    started: list[Service] = []
    roles = tuple(roles)
    app.size_pool(db_connections(app, roles))
    try:
        for role in roles:
            for factory in services_for(role, app):
                with _BUILDING:
                    service = factory(app)
                service.start()
                started.append(service)
    except BaseException:
        _stop_services(started)
        raise
    return Running(app, started)


def _stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        try:
            service.stop()
        except Exception:  # one failing stop must not keep the others running
            log.exception("arrêt de %s en échec", service.name)


def stop(running: Running) -> None:
    """Stop one operator's services, last started first."""
    _stop_services(running.services)


def start_both(apps: Iterable[App], roles: Iterable[str] = ROLES) -> list[Running]:
    """Both operators' services, started side by side; if one cannot start, the other is
    stopped and the first error is raised."""
    apps, roles = list(apps), tuple(roles)
    results: list[Running | BaseException | None] = [None] * len(apps)

    def one(index: int) -> None:
        try:
            results[index] = start(apps[index], roles)
        except BaseException as exc:  # handed to the caller below
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,), name=f"start-{app.settings.domain}")
               for i, app in enumerate(apps)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running = [r for r in results if isinstance(r, Running)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for r in running:
            stop(r)
        raise errors[0]
    return running


def serve(apps: list[App], *, ready: Callable[[list[Running]], None] | None = None,
          stop_event: threading.Event | None = None) -> None:
    """Run both operators until SIGTERM/SIGINT (or ``stop_event``), like ``mss run``: call
    ``ready`` once both answer, keep the CRLs fresh (each its own, and the copy the other
    trusts), then stop both."""
    stop_now = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop_now.set())
    running = start_both(apps)
    try:
        if ready is not None and not stop_now.is_set():
            ready(running)
        due = time.monotonic() + MAINTENANCE_INTERVAL
        # Short waits: a signal the kernel hands to another thread only sets a flag, which
        # this (main) thread acts on when it wakes, not during a long wait.
        while not stop_now.wait(SIGNAL_CHECK_SECONDS):
            if time.monotonic() >= due:
                _maintain_pair(running)
                due = time.monotonic() + MAINTENANCE_INTERVAL
    finally:
        for r in reversed(running):
            stop(r)


def _maintain_pair(running: list[Running]) -> None:
    for r in running:
        _maintain(r.app, r.services)
    try:
        a, b = (r.app for r in running)
        trust_peer(a, b)
        trust_peer(b, a)
    except Exception:  # housekeeping must never bring the services down
        log.exception("copie des CRL entre les deux opérateurs en échec")
