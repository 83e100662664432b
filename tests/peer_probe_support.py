"""Peers for the probe's tests (issue #20, the trust space's health): our operator (``mss init``'s
data directory), peer operators' authorities built with ``certs.pki``, and their relays as real
aiosmtpd STARTTLS servers on free loopback ports, each with the relay's own server context
(``gateway.smtp.tls.relay_context``: mutual TLS, ECO.1.1.3 suites) and the certificate a scenario
needs — valid, about to expire, expired, revoked, from an authority we do not trust, or
presented to an operator it does not trust back. Plus a closed port and a silent server."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import delete, update

from certs.pki import Issued, Pki
from core import audit
from core.db import Database
from core.settings import Settings
from gateway.smtp.tls import relay_context
from mss.app import App
from mss.setup import init, write_pair
from peers.health import PeerProbe
from spool import queue as q
from spool.models import DeliveryEvent, Origin, QueuedMessage, RecipientKind
from tests.mailstore_fixtures import free_port
from trust_space.models import Operator, TrustedDomain
from trust_space.naming import normalise_dn

NOW = datetime.now(UTC)
PEER_ORG = "Pair Santé"


class Quiet:
    """An aiosmtpd handler noting the MAIL FROMs and QUITs it sees (a probe sends QUIT and
    never MAIL FROM)."""

    def __init__(self) -> None:
        self.mail: list[str] = []
        self.quits = 0

    async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]  # noqa: N802
        self.mail.append(address)
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.quits += 1
        return "221 Au revoir"


@dataclass
class Authority:
    """A peer operator's CA (``certs.pki``) with its own certificate ledger."""

    pki: Pki
    db: Database

    @classmethod
    def create(cls, where: Path, organisation: str, domain: str) -> Authority:
        where.mkdir(parents=True, exist_ok=True)
        db = Database(f"sqlite:///{where / 'ledger.db'}")
        db.create_all()
        return cls(Pki.create(where / "pki", organisation, domain), db)

    def operator(self, host: str, **validity: object) -> Issued:
        with self.db.transaction() as session:
            return self.pki.issue_operator(session, [host], PEER_ORG, **validity)  # type: ignore[arg-type]

    def revoke(self, issued: Issued) -> None:
        with self.db.transaction() as session:
            self.pki.revoke(session, issued.certificate.serial_number, "keyCompromise")
            self.pki.make_crl(session)


@dataclass
class Relay:
    """A peer relay on 127.0.0.1:``port`` presenting ``issued``."""

    port: int
    issued: Issued
    stop: Callable[[], None]
    handler: Quiet | None = None

    @property
    def dn(self) -> str:
        return self.issued.certificate.subject.rfc4514_string()


def relay_tls(where: Path, authority: Authority, issued: Issued, trusts: Path) -> ssl.SSLContext:
    """A relay data directory (``pki/ca.pem``, ``operator.crt|key``, ``peers/``: the CA file
    ``trusts``) and its relay's server context (``gateway.smtp.tls.relay_context``)."""
    pki = where / "pki"
    (pki / "peers").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(authority.pki.ca_pem_path, pki / "ca.pem")
    shutil.copyfile(trusts, pki / "peers" / "trusted.pem")
    write_pair(issued, pki / "operator.crt", pki / "operator.key")
    return relay_context(Settings.load(data_dir=where, environ={}))


def start_relay(where: Path, authority: Authority, issued: Issued, trusts: Path) -> Relay:
    """That relay served by aiosmtpd, STARTTLS required (as mss's own relay port)."""
    port, handler = free_port(), Quiet()
    controller = Controller(handler, hostname="127.0.0.1", port=port, require_starttls=True,
                            tls_context=relay_tls(where, authority, issued, trusts))
    controller.start()
    return Relay(port, issued, controller.stop, handler)


def start_blocking_relay(where: Path, authority: Authority, issued: Issued,
                         trusts: Path) -> Relay:
    """That relay served by ``Blocking``."""
    server = Blocking(relay_tls(where, authority, issued, trusts))
    return Relay(server.port, issued, server.stop)


class Blocking:
    """A relay written with blocking sockets (Python's ``ssl`` on a thread): unlike an asyncio
    server, a handshake it refuses ends with the TLS alert actually sent."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._session(conn)
                except OSError:
                    pass  # the handshake this server refuses

    def _session(self, conn: socket.socket) -> None:
        stream = conn.makefile("rwb")
        for reply in (b"220 relais.test ESMTP\r\n", b"250-relais.test\r\n250 STARTTLS\r\n",
                      b"220 2.0.0 Allons-y\r\n"):
            if not reply.startswith(b"220 relais"):
                stream.readline()  # EHLO, then STARTTLS
            stream.write(reply)
            stream.flush()
        with self.context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1024)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Silent:
    """Accepts connections and never says a word (a relay that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    return free_port()


@dataclass
class Scene:
    """Our operator and its peers: ``domains`` maps each whitelisted domain to its scenario."""

    root: Path
    app: App
    relays: dict[str, Relay] = field(default_factory=dict)
    silent: Silent | None = None

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def whitelist(self, domain: str, dn: str, port: int, host: str = "127.0.0.1") -> None:
        with self.app.db.transaction() as session:
            operator = session.query(Operator).filter_by(certificate_dn=dn).one_or_none()
            if operator is None:
                operator = Operator(name=f"Opérateur de {domain}", certificate_dn=dn)
                session.add(operator)
            session.add(TrustedDomain(domain=domain, operator=operator, certificate_dn=dn,
                                      relay_host=host, relay_port=port))

    def forget_probes(self) -> None:
        with self.app.db.transaction() as session:
            session.execute(delete(PeerProbe))

    def close(self) -> None:
        for relay in self.relays.values():
            relay.stop()
        if self.silent is not None:
            self.silent.close()
        self.app.close()


# Scenario → whitelisted domain. "conforme" shares its relay with "aussi" (one session for
# both); "dn" is whitelisted with a DN its relay does not present.
DOMAINS = {
    "ok": "sain.test", "aussi": "aussi.sain.test", "soon": "bientot.test",
    "expired": "expire.test", "revoked": "revoque.test", "stranger": "inconnu.test",
    "dn": "autre-dn.test", "nocrl": "sans-crl.test", "distrust": "mefiant.test",
    "alert": "alerte.test",
    "closed": "ferme.test", "silent": "muet.test",
}


def build_scene(root: Path, **overrides: object) -> Scene:
    """Our operator (``mss init`` on ``root/nous``) and one peer per scenario of ``DOMAINS``."""
    settings = Settings.load(data_dir=root / "nous", environ={}, domain="nous.test",
                             hostname="relais.nous.test", metrics_port=0, **overrides)
    app = App(settings)
    init(app)
    ours = settings.pki_dir / "ca.pem"
    scene = Scene(root, app)
    peer = Authority.create(root / "ac-pair", PEER_ORG, "pair.test")
    nocrl = Authority.create(root / "ac-sans-crl", "Pair sans CRL", "sans-crl.test")
    stranger = Authority.create(root / "ac-inconnue", "AC inconnue", "inconnu.test")
    issued = {
        "ok": peer.operator("relais.sain.test"),
        "soon": peer.operator("relais.bientot.test", valid_days=10),
        "expired": peer.operator("relais.expire.test", not_before=NOW - timedelta(days=400),
                                 not_after=NOW - timedelta(days=2)),
        "revoked": peer.operator("relais.revoque.test"),
        "dn": peer.operator("relais.autre-dn.test"),
        "distrust": peer.operator("relais.mefiant.test"),
        "alert": peer.operator("relais.alerte.test"),
        "nocrl": nocrl.operator("relais.sans-crl.test"),
        "stranger": stranger.operator("relais.inconnu.test"),
    }
    peer.revoke(issued["revoked"])
    peers_dir = settings.pki_dir / "peers"
    peers_dir.mkdir(exist_ok=True)
    for name, path in (("pair-ca", peer.pki.ca_pem_path), ("pair-crl", peer.pki.crl_path),
                       ("sans-crl-ca", nocrl.pki.ca_pem_path)):
        shutil.copyfile(path, peers_dir / f"{name}.pem")  # what `mss peer trust` does
    for name, cert in issued.items():
        trusts = nocrl.pki.ca_pem_path if name in ("distrust", "alert") else ours
        owner = {"nocrl": nocrl, "stranger": stranger}.get(name, peer)
        start = start_blocking_relay if name == "alert" else start_relay
        scene.relays[name] = start(root / f"relais-{name}", owner, cert, trusts)
    for name, relay in scene.relays.items():
        dn = relay.dn if name != "dn" else "CN=relais.ailleurs.test,O=Pair Santé"
        scene.whitelist(DOMAINS[name], dn, relay.port)
    scene.whitelist(DOMAINS["aussi"], scene.relays["ok"].dn, scene.relays["ok"].port)
    scene.whitelist(DOMAINS["closed"], "CN=relais.ferme.test,O=Pair Santé", closed_port())
    scene.silent = Silent()
    scene.whitelist(DOMAINS["silent"], "CN=relais.muet.test,O=Pair Santé", scene.silent.port)
    # Our own domain in the list (as the national list has it): never probed as a peer.
    scene.whitelist(settings.domain, "CN=nous.test,O=Nous", closed_port())
    return scene


def seed_traffic(db: Database, domain: str, dn: str, now: datetime) -> None:
    """A day of traffic with ``domain``: one message delivered (two recipients), one deferred
    twice, one bounced, one still waiting for 3 hours, one delivered two days ago (outside
    the period); two received from its relay (``dn``), two refused by us (one after MAIL
    FROM, under its DN; one at MAIL FROM, known by its sender's domain)."""
    with db.transaction() as session:
        q.enqueue(session, queue_id="QATTENTE", origin=Origin.SUBMISSION,
                  envelope_from="marie@nous.test", message_key="<attente@nous.test>",
                  submitter="marie@nous.test", size=10, local=None, peer=b"x",
                  recipients=[(f"paul@{domain}", RecipientKind.PEER)])
        session.execute(update(QueuedMessage).where(QueuedMessage.id == "QATTENTE")
                        .values(created_at=now - timedelta(hours=3)))
        for queue_id, rcpt, event, kind, when in (
                ("QREMIS", "paul", "delivered", "peer", now),
                ("QREMIS", "julie", "delivered", "clear", now),
                ("QDIFF", "paul", "deferred", "peer", now), ("QDIFF", "paul", "deferred",
                                                             "peer", now),
                ("QREFUS", "inconnu", "bounced", "peer", now),
                ("QVIEUX", "paul", "delivered", "peer", now - timedelta(days=2)),
                ("QLOCAL", "marie", "delivered", "local", now)):
            address = f"{rcpt}@{domain}" if kind != "local" else "marie@nous.test"
            session.add(DeliveryEvent(at=when, queue_id=queue_id, message_key=f"<{queue_id}>",
                                      recipient=address, event=event, detail=f"{kind} 250"))
        peer_dn = normalise_dn(dn)
        for n in range(2):
            audit.record(session, actor=peer_dn, action="smtp.relay.receive",
                         target=f"QRECU{n}", outcome="queued", request={"from": f"x@{domain}"})
        audit.record(session, actor=peer_dn, action="smtp.relay.refuse", target="rcpt",
                     outcome="unknown_recipient", request={"from": f"x@{domain}"})
        audit.record(session, actor="127.0.0.1", action="smtp.relay.refuse", target="mail",
                     outcome="peer_dn_mismatch", request={"from": f"y@{domain}"})
        audit.record(session, actor="127.0.0.1", action="smtp.relay.refuse", target="mail",
                     outcome="peer_dn_mismatch", request={"from": "z@ailleurs.test"})


def scene_fixture(root: Path, **overrides: object) -> Iterator[Scene]:
    scene = build_scene(root, **overrides)
    try:
        yield scene
    finally:
        scene.close()
