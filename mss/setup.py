"""`mss init`: a data directory ready to run (schema, secret, CA, server and operator certificates).

Idempotent: every step checks what is already there.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from certs.pki import Issued, Pki
from core import audit, migrate
from core.settings import Settings
from mailstore.lmtps import LMTP_CLIENT_NAME
from mss.app import TOML_TEMPLATE, App

log = logging.getLogger("mss.setup")


@dataclass(frozen=True)
class InitReport:
    data_dir: Path
    database_url: str
    created_pki: bool
    server_cert: Path
    operator_cert: Path


def write_pair(issued: Issued, cert_path: Path, key_path: Path,
               password: bytes | None = None) -> None:
    """Write a certificate and its key (key file mode 0600, created before anything is written)."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(issued.cert_pem())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(issued.key_pem(password))


def server_hostnames(app: App) -> list[str]:
    names = [app.settings.hostname, "localhost", app.settings.domain, f"mail.{app.settings.domain}"]
    fqdn = socket.getfqdn()
    if fqdn and "." in fqdn and fqdn not in names:
        names.append(fqdn)
    names += [h for h in reached_hosts(app.settings) if not _is_address(h)]
    return list(dict.fromkeys(n for n in names if n))


def server_addresses(settings: Settings) -> list[str]:
    """The server certificate's iPAddress names: the loopback, and the addresses the other
    hosts reach this one by (MSS_IMAP_HOST, MSS_SUBMISSION_HOST, MSS_LMTP_URL)."""
    found = [h for h in reached_hosts(settings) if _is_address(h)]
    return list(dict.fromkeys(["127.0.0.1", "::1", *found]))


def reached_hosts(settings: Settings) -> list[str]:
    """The names other hosts check our server certificate against (issue #19): the webmail's
    IMAP and submission targets, the host of the LMTP URL and the mail stores' addresses
    (``MSS_MAIL_STORES``: the stores proxy to each other and the gateways deliver to each)."""
    endpoint = settings.lmtp_endpoint
    lmtp = endpoint.host if endpoint and endpoint.tls else ""
    stores = [s.address for s in settings.stores]
    return [h for h in (settings.imap_host, settings.submission_host, lmtp, *stores) if h]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


CRL_RENEW_MARGIN = timedelta(days=2)


def refresh_crl_if_due(pki: Pki, session: Session) -> bool:
    """Re-sign the CRL when it is missing or expires within ``CRL_RENEW_MARGIN`` (it is valid
    7 days; OpenSSL-based checkers such as Dovecot's refuse every client certificate once the
    CRL has expired). Returns True when a new CRL was written."""
    if pki.crl_path.exists():
        crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
        if crl.next_update_utc and crl.next_update_utc - datetime.now(UTC) > CRL_RENEW_MARGIN:
            return False
    pki.make_crl(session)
    return True


def init(app: App) -> InitReport:
    """Create or complete the data directory of ``app``."""
    s = app.settings
    if not s.data_dir.exists():
        # Private at creation; the mail store later adds only the traverse bit it needs, which
        # must survive every later `mss init` / `mss run` (so never reset an existing mode).
        s.data_dir.mkdir(parents=True, mode=0o750)
    toml = s.data_dir / "mss.toml"
    if not toml.exists():
        toml.write_text(TOML_TEMPLATE.format(domain=s.domain), encoding="utf-8")
    s.secret()
    migrate.upgrade(app.db)
    created = not (s.pki_dir / "ca.pem").exists()
    pki = Pki.create(s.pki_dir, s.operator_name, s.domain, password=s.secret())
    app.__dict__["pki"] = pki
    server_crt, server_key = s.pki_dir / "server.crt", s.pki_dir / "server.key"
    operator_crt, operator_key = s.pki_dir / "operator.crt", s.pki_dir / "operator.key"
    with app.db.transaction() as session:
        if not server_crt.exists():
            issued = pki.issue_server(session, server_hostnames(app), server_addresses(s))
            write_pair(issued, server_crt, server_key)
        else:
            warn_unnamed_hosts(s, server_crt)
        ensure_lmtp_client(app, pki, session)
        if not operator_crt.exists():
            # CN = our domain: the DN a peer pins in its whitelist is unique per operator.
            issued = pki.issue_operator(session, [s.domain, s.hostname], s.operator_name)
            write_pair(issued, operator_crt, operator_key)
        refresh_crl_if_due(pki, session)
        ensure_webmail_account(app, session)
        if created:
            audit.record(session, actor="mss-cli", action="pki.create", target=s.domain,
                         outcome="ok")
    return InitReport(s.data_dir, s.effective_database_url, created, server_crt, operator_crt)


def warn_unnamed_hosts(settings: Settings, server_crt: Path) -> None:
    """The hosts of MSS_IMAP_HOST, MSS_SUBMISSION_HOST and MSS_LMTP_URL that the existing
    server certificate does not name: every client there would refuse it. Said, not fixed:
    the certificate may come from another authority (``mss cert install``)."""
    from certs import renewal

    names = set(renewal.names(x509.load_pem_x509_certificate(server_crt.read_bytes())))
    missing = [h for h in reached_hosts(settings) if h not in names]
    if missing:
        log.warning("le certificat serveur %s ne nomme pas %s : les clients de ces hôtes le "
                    "refuseront ; émettez-en un qui les nomme (mss cert issue server NOM, "
                    "puis remplacez server.crt et server.key)", server_crt, ", ".join(missing))


def ensure_lmtp_client(app: App, pki: Pki, session: Session) -> bool:
    """With MSS_LMTP_URL=lmtps://…, the gateways' LMTP client certificate (clientAuth, our CA)
    at ``Settings.lmtp_client_pair`` when missing. Returns True when one was written."""
    endpoint = app.settings.lmtp_endpoint
    cert, key = app.settings.lmtp_client_pair
    if endpoint is None or not endpoint.tls or cert.exists():
        return False
    write_pair(pki.issue_client(session, LMTP_CLIENT_NAME), cert, key)
    audit.record(session, actor="mss-cli", action="cert.issue", target=LMTP_CLIENT_NAME,
                 request={"kind": "lmtp"}, outcome="ok")
    return True


def ensure_webmail_account(app: App, session: Session) -> str:
    """The webmail's SERVICE account ``webmail@<domain>`` (the only kind the gateway lets
    submit for someone else, with an authorisation identity). Its random password is kept in
    DATA_DIR/webmail.secret (mode 0600); a missing file gets a new password. Returns the login.
    """
    from trust_space.accounts import create_account, find_account, set_password
    from trust_space.models import AccountKind

    login = f"webmail@{app.settings.domain}"
    path = app.settings.data_dir / "webmail.secret"
    account = find_account(session, login)
    if account is not None and path.exists():
        return login
    password = secrets.token_urlsafe(24) + "aA1"  # strength rules: lower, upper, digit
    if account is None:
        create_account(session, login=login, kind=AccountKind.SERVICE, password=password)
    else:
        set_password(account, password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    return login
