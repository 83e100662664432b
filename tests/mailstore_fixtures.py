"""A small trust space for the mail-store tests (and the IMAP benchmark), built directly with
the models and the real CA, like ``mss demo`` builds its own; and the pytest fixtures that run
one real Dovecot for the whole test session (test modules load them with
``pytest_plugins = ["tests.mailstore_fixtures"]``).

People: Marie (médecin), Paul (pharmacien, administrator of the pharmacy's mailbox), Julie
(infirmière, user on it), Louis (account locked), Sophie (account suspended), Hugo (mailbox
suspended), Nina (mailbox with a 1 MB quota), Emma and Léo (for the client-layer tests).
Applicative mailbox ``lps.cabinetmartin``.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certs.pki import CardIdentity, Issued, Pki
from core.db import Database, utcnow
from core.settings import Settings
from mailstore.config import Options
from mailstore.service import DovecotService
from tests.ports import free_port  # noqa: F401 — re-exported for the test modules
from trust_space.accounts import hash_password
from trust_space.models import (
    Account,
    AccountKind,
    AccountState,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    Professional,
    Role,
)

PASSWORD = "Demo-Passw0rd"
ORG = "pharma.ducentre.64000"
LPS = "lps.cabinetmartin"


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    rpps: str | None = None
    adeli: str | None = None
    account_state: AccountState = AccountState.ACTIVE
    locked: bool = False
    mailbox_state: MailboxState = MailboxState.PUBLISHED
    quota_mb: int | None = None

    @property
    def local(self) -> str:
        return f"{self.first}.{self.last}".lower()

    @property
    def national_id(self) -> str:
        return "8" + self.rpps if self.rpps else "0" + (self.adeli or "")


PEOPLE = {
    "marie": Person("Marie", "Martin", rpps="10000000001"),
    "paul": Person("Paul", "Durand", rpps="10000000002"),
    "julie": Person("Julie", "Bernard", adeli="640000003"),
    "louis": Person("Louis", "Petit", rpps="10000000004", locked=True),
    "sophie": Person("Sophie", "Roux", rpps="10000000005", account_state=AccountState.SUSPENDED),
    "hugo": Person("Hugo", "Blanc", rpps="10000000006", mailbox_state=MailboxState.SUSPENDED),
    "nina": Person("Nina", "Morel", rpps="10000000007", quota_mb=1),
    "emma": Person("Emma", "Garnier", rpps="10000000008"),
    "leo": Person("Leo", "Faure", rpps="10000000009"),
}


@dataclass
class TrustSpace:
    """What the tests need to know about the built trust space."""

    settings: Settings
    db: Database
    pki: Pki
    domain: str
    cards: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (crt, key)
    scratch: list[Path] = field(default_factory=list)  # removed with the session

    def address(self, name: str) -> str:
        local = {"org": ORG, "lps": LPS}.get(name) or PEOPLE[name].local
        return f"{local}@{self.domain}"

    @property
    def ca_file(self) -> Path:
        return self.settings.pki_dir / "ca.pem"

    password = PASSWORD

    def tls_context(self, card: str | None = None) -> ssl.SSLContext:
        """A client TLS context trusting mss's CA, with a client certificate when asked."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if card is not None:
            crt, key = self.cards[card]
            context.load_cert_chain(str(crt), str(key))
        return context

    def imaps(self, card: str | None = None) -> imaplib.IMAP4_SSL:
        """An imaplib connection on the IMAPS port."""
        return imaplib.IMAP4_SSL("127.0.0.1", self.settings.imaps_port,
                                 ssl_context=self.tls_context(card), timeout=10)

    def revoke(self, card: str) -> None:
        """Revoke one of the test certificates and publish the CRL (no reload)."""
        with self.db.transaction() as session:
            revoke(self, session, card)

    def sibling_settings(self, **overrides: object) -> Settings:
        """Settings of a second installation (own data directory and ports) on the same
        database and CA."""
        root = open_tempdir("mss-mailstore-2-")
        self.scratch.append(root)
        data = root / "data"
        data.mkdir()
        shutil.copytree(self.settings.pki_dir, data / "pki")
        values: dict[str, object] = {"database_url": self.settings.effective_database_url}
        values.update(overrides)
        return make_settings(data, **values)

    @staticmethod
    def message(subject: str, sender: str = "marie.martin@mss.test",
                to: str = "paul.durand@mss.test", body: str = "Bonjour.\n",
                date: str = "Mon, 10 Nov 2025 10:00:00 +0100") -> bytes:
        """A small RFC 5322 message."""
        return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
                f"Message-ID: <{os.urandom(6).hex()}@mss.test>\r\n\r\n{body}").encode()


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    # The shared trust space lets the demo password log in over IMAP/SMTP (the operator's
    # setting MSS_IMAP_SMTP_WEB_PASSWORD): most tests are about something else. The default
    # (off: application passwords only) is what tests/test_attacks_auth.py checks.
    values: dict[str, object] = {"imap_port": free_port(), "imaps_port": free_port(),
                                 "managesieve_port": free_port(),
                                 "demo_password": PASSWORD, "mailbox_quota_mb": 50,
                                 "imap_smtp_web_password": True}
    values.update(overrides)
    return Settings.load(data_dir=data_dir, environ={}, **values)


def build(settings: Settings) -> TrustSpace:
    """Schema, CA, server certificate, people, mailboxes, delegations and card files."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.create_all()
    pki = Pki.create(settings.pki_dir, settings.operator_name, settings.domain)
    space = TrustSpace(settings, db, pki, settings.domain)
    pwd_hash = hash_password(PASSWORD)
    with db.transaction() as session:
        _write_pair(pki.issue_server(session, ["localhost"], ["127.0.0.1"]),
                    settings.pki_dir / "server.crt", settings.pki_dir / "server.key")
        profs = {name: _person(session, space, p, pwd_hash) for name, p in PEOPLE.items()}
        org = Mailbox(address=space.address("org"), kind=MailboxKind.ORGANISATIONAL,
                      state=MailboxState.PUBLISHED, display_name="Pharmacie du Centre")
        session.add(org)
        session.add_all([Delegation(mailbox=org, professional=profs["paul"],
                                    role=Role.ADMINISTRATOR),
                         Delegation(mailbox=org, professional=profs["julie"], role=Role.USER)])
        lps = Mailbox(address=space.address("lps"), kind=MailboxKind.APPLICATIVE,
                      state=MailboxState.PUBLISHED, professional=profs["marie"])
        session.add(lps)
        session.add(Account(login=lps.address, kind=AccountKind.APPLICATIVE, mailbox=lps,
                            password_hash=pwd_hash, failed_attempts=0))
        for name in ("marie", "julie", "hugo", "emma"):
            space.cards[name] = _card(session, space, PEOPLE[name], name)
        space.cards["stranger"] = _card(session, space, Person("Inconnu", "Hors", "19999999999"),
                                        "stranger")
        space.cards["revoked"] = _card(session, space, PEOPLE["paul"], "revoked")
        space.cards["lps"] = _client(session, space)
        revoke(space, session, "revoked")
    return space


def _person(session: object, space: TrustSpace, p: Person, pwd_hash: str) -> Professional:
    prof = Professional(rpps=p.rpps, adeli=p.adeli, first_name=p.first, last_name=p.last,
                        profession="Médecin")
    box = Mailbox(address=f"{p.local}@{space.domain}", kind=MailboxKind.PERSONAL,
                  state=p.mailbox_state, professional=prof, quota_mb=p.quota_mb)
    account = Account(login=box.address, kind=AccountKind.PROFESSIONAL, professional=prof,
                      state=p.account_state, password_hash=pwd_hash, failed_attempts=0)
    if p.locked:
        account.failed_attempts = 5
        account.locked_until = utcnow() + timedelta(minutes=15)
    session.add_all([prof, box, account])  # type: ignore[attr-defined]
    return prof


def _card(session: object, space: TrustSpace, p: Person, name: str) -> tuple[Path, Path]:
    identity = CardIdentity(p.national_id, p.first, p.last, "Médecin",
                            f"{p.local}@{space.domain}")
    issued = space.pki.issue_card_soft(session, identity)  # type: ignore[arg-type]
    return _write_pair(issued, *_pair_paths(space, name))


def _client(session: object, space: TrustSpace) -> tuple[Path, Path]:
    issued = space.pki.issue_client(session, "Logiciel du cabinet Martin",  # type: ignore[arg-type]
                                    space.address("lps"))
    return _write_pair(issued, *_pair_paths(space, "lps"))


def _pair_paths(space: TrustSpace, name: str) -> tuple[Path, Path]:
    base = space.settings.data_dir / "test-certs"
    return base / f"{name}.crt", base / f"{name}.key"


def revoke(space: TrustSpace, session: object, card: str) -> None:
    """Revoke one of the test certificates and publish the CRL."""
    cert = x509.load_pem_x509_certificate(space.cards[card][0].read_bytes())
    space.pki.revoke(session, cert.serial_number, "keyCompromise")  # type: ignore[arg-type]
    publish_crl(space, session)


def publish_crl(space: TrustSpace, session: object) -> None:
    """The issuing CA's CRL (``Pki.make_crl``) plus an empty CRL of the root, which OpenSSL's
    CRL_CHECK_ALL (Dovecot's ``ssl_require_crl``) needs for the issuing CA certificate."""
    space.pki.make_crl(session)  # type: ignore[arg-type]
    crl_path = space.pki.crl_path
    text = crl_path.read_bytes()
    if text.count(b"BEGIN X509 CRL") < 2:
        crl_path.write_bytes(text + _root_crl(space))


def _root_crl(space: TrustSpace) -> bytes:
    key = serialization.load_pem_private_key(
        (space.settings.pki_dir / "root.key").read_bytes(), None)
    now = utcnow()
    crl = (x509.CertificateRevocationListBuilder().issuer_name(space.pki.root.subject)
           .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=7))
           .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.PEM)


def _write_pair(issued: Issued, crt: Path, key: Path) -> tuple[Path, Path]:
    crt.parent.mkdir(parents=True, exist_ok=True)
    crt.write_bytes(issued.cert_pem())
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(issued.key_pem())
    return crt, key


# ---------------------------------------------------------------------- pytest fixtures
TEST_OPTIONS = Options(auth_failure_delay=0, auth_penalty=False)


def open_tempdir(prefix: str) -> Path:
    """A temporary directory that Dovecot's unprivileged processes can traverse (pytest's own
    temporary root is 0700: fine for the mss process, closed to ``dovecot`` when run as root).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@pytest.fixture(scope="session")
def mailstore_space() -> Iterator[TrustSpace]:
    """The trust space above, in a session-wide temporary data directory (SQLite)."""
    root = open_tempdir("mss-mailstore-")
    space = build(make_settings(root / "data"))
    yield space
    space.db.dispose()
    for path in (root, *space.scratch):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def _dovecot_session(mailstore_space: TrustSpace) -> Iterator[DovecotService]:
    service = DovecotService(mailstore_space.settings, mailstore_space.db, options=TEST_OPTIONS)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def dovecot(_dovecot_session: DovecotService) -> DovecotService:
    """The session's Dovecot, answering (a test may have restarted it)."""
    assert _dovecot_session.wait_ready(30), "Dovecot ne répond plus"
    return _dovecot_session
