"""`mss demo`: the demo trust space that later work, tests and the README rely on.

Idempotent: running it twice changes nothing the second time (passwords are reset to the current
MSS_DEMO_PASSWORD so the printed logins are always true).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from certs.errors import CardError
from certs.pki import CardIdentity, Pki
from core import audit
from mss.app import App
from mss.setup import init, write_pair
from mss.whitelist_fetch import disable_in_toml
from trust_space.accounts import hash_password
from trust_space.models import (
    Account,
    AccountKind,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    OtpChannel,
    Professional,
    Role,
    Structure,
)
from trust_space.naming import profession_label

DEMO_PIN = "1234"


@dataclass(frozen=True)
class DemoPerson:
    first_name: str
    last_name: str
    civility: str
    profession: str
    specialty: str
    rpps: str | None = None
    adeli: str | None = None
    mobile: str = ""

    @property
    def national_id(self) -> str:
        return "8" + self.rpps if self.rpps else "0" + (self.adeli or "")

    def local_part(self) -> str:
        return f"{self.first_name}.{self.last_name}".lower()


PEOPLE = (
    DemoPerson("Marie", "Martin", "Dr", "Médecin", "Médecine générale", rpps="10000000001",
               mobile="+33600000001"),
    DemoPerson("Paul", "Durand", "M.", "Pharmacien", "Officine", rpps="10000000002",
               mobile="+33600000002"),
    DemoPerson("Julie", "Bernard", "Mme", "Infirmier", "Soins infirmiers", adeli="640000003",
               mobile="+33600000003"),
)
PHARMACY = ("640000001", "Pharmacie du Centre", "1 place Clemenceau", "64000", "Pau")
ORG_LOCAL = "pharma.ducentre.64000"
APP_LOCAL = "lps.cabinetmartin"
OPERATOR_LOGIN = "operateur@{domain}"


@dataclass
class DemoReport:
    domain: str
    password: str
    password_generated: bool
    accounts: list[tuple[str, str]] = field(default_factory=list)  # (login, description)
    files: list[Path] = field(default_factory=list)
    cards: list[str] = field(default_factory=list)
    operator_totp: str = ""
    app_password_file: Path | None = None  # marie's IMAP/SMTP application password (0600)


def setup_demo(app: App) -> DemoReport:
    """Create (or complete) the demo trust space in ``app``'s data directory."""
    init(app)
    s = app.settings
    disable_in_toml(s)  # the demo follows no published whitelist
    password, generated = _demo_password(app)
    report = DemoReport(s.domain, password, generated)
    pwd_hash = hash_password(password)
    with app.db.transaction() as session:
        pharmacy = _structure(session)
        people = [_professional(session, p, s.domain) for p in PEOPLE]
        for person, prof in zip(PEOPLE, people, strict=True):
            box = _mailbox(session, f"{person.local_part()}@{s.domain}", MailboxKind.PERSONAL,
                           f"{person.first_name} {person.last_name}", professional=prof)
            _account(session, box.address, AccountKind.PROFESSIONAL, pwd_hash, professional=prof)
            label = profession_label(person.profession, person.civility)
            report.accounts.append((box.address, f"{label}, carte CPS PIN {DEMO_PIN}"))
        org = _mailbox(session, f"{ORG_LOCAL}@{s.domain}", MailboxKind.ORGANISATIONAL,
                       "Pharmacie du Centre", structure=pharmacy)
        _delegate(session, org, people[1], Role.ADMINISTRATOR)
        _delegate(session, org, people[2], Role.USER)
        lps = _mailbox(session, f"{APP_LOCAL}@{s.domain}", MailboxKind.APPLICATIVE,
                       "Logiciel du cabinet Martin", professional=people[0])
        _account(session, lps.address, AccountKind.APPLICATIVE, pwd_hash, mailbox=lps)
        report.accounts.append((lps.address, "boîte applicative (logiciel métier)"))
        report.operator_totp = _operator(app, session, pwd_hash)
        report.accounts.append((OPERATOR_LOGIN.format(domain=s.domain),
                                "opérateur (second facteur TOTP, voir ci-dessous)"))
        _issue_mailbox_certs(app, session)
        report.files += _issue_demo_files(app, session, lps.address)
        report.cards += _provision_cards(app, session)
        report.app_password_file = _demo_app_password(app, session, people[0])
        audit.record(session, actor="mss-cli", action="demo.setup", target=s.domain, outcome="ok")
    return report


def demo_logins(app: App) -> list[tuple[str, str]]:
    """(login, password) of the demo accounts present in this data directory, for `mss run`."""
    path = app.settings.data_dir / "demo-password"
    if not path.exists():
        return []
    path.chmod(0o600)  # an older version may have left it readable by others
    password = path.read_text().strip()
    with app.db.transaction() as session:
        logins = session.scalars(select(Account.login).where(
            Account.kind.in_([AccountKind.PROFESSIONAL, AccountKind.APPLICATIVE])
        ).order_by(Account.id)).all()
    return [(login, password) for login in logins]


def demo_password_file(app: App) -> Path:
    """Where the demo accounts' password is kept (mode 0600)."""
    return app.settings.data_dir / "demo-password"


def operator_totp_file(app: App) -> Path:
    """Where the demo operator's TOTP seed is kept (mode 0600)."""
    return app.settings.demo_dir / "operator-totp.txt"


def _demo_password(app: App) -> tuple[str, bool]:
    """MSS_DEMO_PASSWORD, else the one generated by an earlier run, else a new one. Kept in
    DATA_DIR/demo-password (0600), where `mss demo` and `mss run` say to read it."""
    path = demo_password_file(app)
    generated = not app.settings.demo_password
    if app.settings.demo_password:
        password = app.settings.demo_password
    elif path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
    write_secret(path, password)
    return password, generated


def write_secret(path: Path, text: str) -> None:
    """``text`` in ``path``, readable by its owner only (0600, also when the file existed
    with a wider mode): the demo's secrets live in files, never in output or logs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _structure(session: Session) -> Structure:
    finess, name, address, postal_code, city = PHARMACY
    found = session.scalar(select(Structure).where(Structure.finess == finess))
    if found is None:
        found = Structure(finess=finess, name=name, address=address, postal_code=postal_code,
                          city=city)
        session.add(found)
        session.flush()
    return found


def _professional(session: Session, p: DemoPerson, domain: str) -> Professional:
    query = select(Professional).where(
        Professional.rpps == p.rpps if p.rpps else Professional.adeli == p.adeli
    )
    found = session.scalar(query)
    if found is None:
        found = Professional(
            rpps=p.rpps, adeli=p.adeli, civility=p.civility, first_name=p.first_name,
            last_name=p.last_name, profession=p.profession, specialty=p.specialty,
            usual_email=f"{p.local_part()}@exemple.fr", mobile=p.mobile,
            place_of_practice="Pau", address="10 rue des Cordeliers", postal_code="64000",
            city="Pau",
        )
        session.add(found)
        session.flush()
    return found


def _mailbox(session: Session, address: str, kind: MailboxKind, display_name: str, *,
             professional: Professional | None = None,
             structure: Structure | None = None) -> Mailbox:
    found = session.scalar(select(Mailbox).where(Mailbox.address == address))
    if found is None:
        from core.db import utcnow

        found = Mailbox(address=address, kind=kind, display_name=display_name,
                        state=MailboxState.PUBLISHED, published_at=utcnow(),
                        professional=professional, structure=structure)
        session.add(found)
        session.flush()
    return found


def _account(session: Session, login: str, kind: AccountKind, pwd_hash: str, *,
             professional: Professional | None = None, mailbox: Mailbox | None = None) -> None:
    found = session.scalar(select(Account).where(Account.login == login))
    if found is None:
        found = Account(login=login, kind=kind, professional=professional, mailbox=mailbox,
                        otp_channel=OtpChannel.EMAIL)
        session.add(found)
    found.password_hash = pwd_hash
    found.failed_attempts = found.code_failures = 0
    found.locked_until = None


def _delegate(session: Session, mailbox: Mailbox, prof: Professional, role: Role) -> None:
    found = session.scalar(select(Delegation).where(
        Delegation.mailbox_id == mailbox.id, Delegation.professional_id == prof.id))
    if found is None:
        session.add(Delegation(mailbox=mailbox, professional=prof, role=role))
        session.flush()


def _operator(app: App, session: Session, pwd_hash: str) -> str:
    """The demo operator account (operator pages of the webmail); its TOTP seed is created once
    and kept in DATA_DIR/demo/operator-totp.txt (0600), where `mss run` says to read it."""
    from trust_space.operator_accounts import ensure_operator
    from webmail.auth import otp

    login = OPERATOR_LOGIN.format(domain=app.settings.domain)
    seed_file = operator_totp_file(app)
    account = session.scalar(select(Account).where(Account.login == login))
    if account is not None and account.is_operator and seed_file.exists():
        account.password_hash = pwd_hash
        account.failed_attempts, account.code_failures, account.locked_until = 0, 0, None
        seed_file.chmod(0o600)
        return seed_file.read_text().strip()
    seed = otp.new_totp_seed()
    operator = ensure_operator(session, login, otp.seal_seed(seed, app.settings.secret()),
                               password_hash=pwd_hash)
    audit.record(session, actor="mss-cli", action="account.operator", target=operator.login,
                 outcome="ok")
    write_secret(seed_file, seed)
    return seed


DEMO_APP_PASSWORD_NAME = "Client IMAP de démonstration"


def demo_app_password_file(app: App, login: str) -> Path:
    """Where the demo keeps ``login``'s application password (mode 0600)."""
    return app.settings.demo_dir / f"{login}.app-password"


def _demo_app_password(app: App, session: Session, prof: Professional) -> Path:
    """An application password for the first demo person, so that a real IMAP/SMTP client can
    be tried (the web password is not an IMAP/SMTP password). Kept while its file and its row
    agree; otherwise a new one replaces it."""
    from trust_space import app_passwords

    account = session.scalar(select(Account).where(Account.professional_id == prof.id))
    assert account is not None
    path = demo_app_password_file(app, account.login)
    current = path.read_text().strip() if path.exists() else ""
    if current and app_passwords.match(session, account, current) is not None:
        return path
    for row in app_passwords.active(session, account):
        if row.name == DEMO_APP_PASSWORD_NAME:
            app_passwords.revoke(session, account, row.prefix)
    row, password = app_passwords.create(session, account, DEMO_APP_PASSWORD_NAME)
    audit.record(session, actor="mss-cli", action="account.app_password.create",
                 target=account.login, outcome="ok",
                 request={"name": row.name, "prefix": row.prefix})
    write_secret(path, password + "\n")
    return path


def _issue_mailbox_certs(app: App, session: Session) -> None:
    """An S/MIME certificate for every local mailbox that has none (key encrypted at rest)."""
    pki: Pki = app.pki
    secret = app.settings.secret()
    for box in session.scalars(select(Mailbox).where(Mailbox.operator_id.is_(None))):
        if box.smime_cert_pem:
            continue
        issued = pki.issue_mailbox(session, box.address, box.display_name)
        box.smime_cert_pem = issued.cert_pem().decode()
        box.smime_key_pem = issued.key_pem(secret).decode()


def _issue_demo_files(app: App, session: Session, applicative: str) -> list[Path]:
    """Card certificates as PEM (for browsers and tests without a token) and the practice
    software's client certificate, under DATA_DIR/demo/."""
    demo = app.settings.demo_dir
    written = []
    for p in PEOPLE:
        address = f"{p.local_part()}@{app.settings.domain}"
        crt = demo / f"{address}.crt"
        if not crt.exists():
            identity = CardIdentity(p.national_id, p.first_name, p.last_name, p.profession,
                                    address)
            write_pair(app.pki.issue_card_soft(session, identity), crt, demo / f"{address}.key")
        written.append(crt)
    crt = demo / f"{applicative}.crt"
    if not crt.exists():
        issued = app.pki.issue_client(session, "Logiciel du cabinet Martin", applicative)
        write_pair(issued, crt, demo / f"{applicative}.key")
    written.append(crt)
    return written


def _provision_cards(app: App, session: Session) -> list[str]:
    """One SoftHSM2 token per demo professional, PIN 1234 (key generated on the token)."""
    existing = set(app.cards.list_cards())
    labels = []
    for p in PEOPLE:
        label = f"CPS-{p.national_id}"
        if label not in existing:
            identity = CardIdentity(p.national_id, p.first_name, p.last_name, p.profession,
                                    f"{p.local_part()}@{app.settings.domain}")
            try:
                app.cards.provision(app.pki, session, identity, pin=DEMO_PIN, label=label)
            except CardError as exc:
                raise CardError(f"carte de démonstration {label} : {exc.message}") from exc
        labels.append(label)
    return labels
