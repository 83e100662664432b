"""`mss selftest`: the conformance checks an operator runs before going live (and the tests run).

Each check talks to the *running* services of this data directory on loopback (or on
``MSS_LISTEN_ADDRESS``) and returns one ``Check``; ``run_selftest`` runs them all. Nothing here
decides policy: the checks observe what the gateway, Dovecot and the PKI actually do and compare
it with the MSSanté requirements they cite.

Side effect: the ``X-MSS-*`` check submits one small message from the first published personal
mailbox to itself and deletes it (INBOX and Sent) once read back.
"""

from __future__ import annotations

import email
import imaplib
import smtplib
import ssl
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message

from cryptography import x509
from sqlalchemy import select

from certs.errors import CertError
from certs.validation import TrustStore, validate
from core import audit
from gateway.deliver.mdn import build_mdn
from gateway.smtp.tls import ECO_SUITES
from mailstore.credentials import master_credentials
from mss.app import App
from trust_space.accounts import find_account
from trust_space.models import Mailbox, MailboxKind, MailboxState, TrustedDomain
from trust_space.naming import normalise_dn

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
EXPIRY_WARNING = timedelta(days=30)
OUTSIDER = "selftest@hors-espace-de-confiance.invalid"
# TLS 1.2 suites a relay must refuse (ECO.1.1.3 allows only ECO_SUITES).
FORBIDDEN_SUITES = ("AES256-GCM-SHA384", "AES128-SHA", "ECDHE-RSA-AES256-SHA",
                    "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES256-GCM-SHA384")
_OLD = {"TLSv1.0": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}


@dataclass(frozen=True)
class Check:
    """One result: ``status`` is ok / warn / fail / skip; ``detail`` says why, in French."""

    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


class Probe:
    """How to reach this installation's listeners from the machine running the self-test."""

    def __init__(self, app: App, timeout: float = 10.0) -> None:
        self.app, self.s, self.timeout = app, app.settings, timeout
        listen = self.s.listen_address
        self.host = "127.0.0.1" if listen in ("", "*", "0.0.0.0", "::", "localhost") else listen

    def context(self, *, version: ssl.TLSVersion | None = None, ciphers: str | None = None,
                client_cert: bool = False) -> ssl.SSLContext:
        """A client context that does not verify (the chain is checked separately)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if version is not None:
            with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ctx.maximum_version = version
            if version < ssl.TLSVersion.TLSv1_2:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else OpenSSL would not even offer it
        if ciphers:
            ctx.set_ciphers(ciphers)
        if client_cert:
            pki = self.s.pki_dir
            ctx.load_cert_chain(str(pki / "operator.crt"), str(pki / "operator.key"))
        return ctx

    def handshake(self, port: int, ctx: ssl.SSLContext, *, implicit: bool = False,
                  host: str | None = None) -> tuple[str, str, bytes]:
        """(version, cipher, server certificate DER) after TLS; raises OSError/SMTPException."""
        target = host or self.host
        if implicit:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(target, port, context=ctx, timeout=self.timeout)
        else:
            smtp = smtplib.SMTP(target, port, timeout=self.timeout)
        try:
            if not implicit:
                smtp.ehlo("selftest.invalid")
                smtp.starttls(context=ctx)
            tls = smtp.sock
            assert isinstance(tls, ssl.SSLSocket)
            smtp.noop()  # TLS 1.3: the server's verdict on our certificate arrives after
            cipher = tls.cipher()
            der = tls.getpeercert(binary_form=True) or b""
            return tls.version() or "", cipher[0] if cipher else "", der
        finally:
            smtp.close()

    def accepts(self, port: int, ctx: ssl.SSLContext, implicit: bool = False) -> bool:
        try:
            self.handshake(port, ctx, implicit=implicit)
        except (OSError, smtplib.SMTPException, ValueError):
            return False
        return True


# ---------------------------------------------------------------------------- TLS (ECO.1.1.x)
def check_tls(probe: Probe, name: str, port: int, *, implicit: bool, relay: bool) -> Check:
    """ECO.1.1.1: TLS ≥ 1.2 only; relay (ECO.1.1.3): only the four ECDHE-RSA suites in 1.2."""
    label = f"tls.{name}"
    try:
        version, cipher, _ = probe.handshake(port, probe.context(client_cert=relay),
                                             implicit=implicit)
    except (OSError, smtplib.SMTPException) as exc:
        return Check(label, FAIL, f"port {port} injoignable ou TLS impossible ({exc})")
    problems = [f"{old} accepté" for old, v in _OLD.items()
                if probe.accepts(port, probe.context(version=v, client_cert=relay), implicit)]
    if not probe.accepts(port, probe.context(version=ssl.TLSVersion.TLSv1_2,
                                             client_cert=relay), implicit):
        problems.append("TLSv1.2 refusé")
    tls13 = probe.accepts(port, probe.context(version=ssl.TLSVersion.TLSv1_3,
                                              client_cert=relay), implicit)
    if relay:
        for suite in ECO_SUITES.split(":"):
            ctx = probe.context(version=ssl.TLSVersion.TLSv1_2, ciphers=suite, client_cert=True)
            if not probe.accepts(port, ctx, implicit):
                problems.append(f"suite {suite} refusée")
        for suite in FORBIDDEN_SUITES:
            try:
                ctx = probe.context(version=ssl.TLSVersion.TLSv1_2, ciphers=suite,
                                    client_cert=True)
            except ssl.SSLError:  # this OpenSSL cannot offer it at all: nothing to test
                continue
            if probe.accepts(port, ctx, implicit):
                problems.append(f"suite hors ECO.1.1.3 acceptée : {suite}")
    if problems:
        return Check(label, FAIL, f"port {port} : " + " ; ".join(problems))
    return Check(label, OK, f"port {port} : {version} {cipher}; TLS 1.0/1.1 refusés; "
                 f"TLS 1.3 {'accepté' if tls13 else 'non proposé'}"
                 + ("; seules les 4 suites ECO.1.1.3 en TLS 1.2" if relay else ""))


# ---------------------------------------------------------------------------- certificates
def check_certificate(probe: Probe, name: str, port: int, *, implicit: bool,
                      relay: bool) -> Check:
    """The certificate presented on ``port``: chain to our CA, dates, CRL, serverAuth."""
    label = f"certificate.{name}"
    try:
        _, _, der = probe.handshake(port, probe.context(client_cert=relay), implicit=implicit)
        cert = x509.load_der_x509_certificate(der)
        validate(cert, TrustStore.with_peers(probe.s.pki_dir), purpose="server")
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return Check(label, FAIL, f"certificat du port {port} illisible ({exc})")
    except CertError as exc:
        return Check(label, FAIL, f"certificat présenté sur le port {port} refusé : "
                     f"{exc.message}")
    left = cert.not_valid_after_utc - datetime.now(UTC)
    subject = cert.subject.rfc4514_string()
    if left < EXPIRY_WARNING:
        return Check(label, WARN, f"{subject} expire dans {left.days} jour(s) "
                     f"({cert.not_valid_after_utc:%Y-%m-%d})")
    return Check(label, OK, f"{subject} : chaîne, dates et révocation valides, expire le "
                 f"{cert.not_valid_after_utc:%Y-%m-%d}")


# ---------------------------------------------------------------------------- whitelist
def check_whitelist(probe: Probe, peers: Sequence[tuple[str, int]]) -> list[Check]:
    """For each ``--peer``: the DN it presents on its relay must be the whitelist's DN of
    every domain routed to it (or, with no route to it, of at least one entry)."""
    with probe.app.db.transaction() as session:
        entries = [(e.domain, e.certificate_dn, e.relay_host, e.relay_port)
                   for e in session.scalars(select(TrustedDomain).order_by(TrustedDomain.domain))]
    if not peers:
        return [Check("whitelist", SKIP, f"{len(entries)} domaine(s) en liste blanche ; "
                      "--peer HÔTE:PORT pour comparer leur DN au certificat présenté")]
    return [_check_peer(probe, host, port, entries) for host, port in peers]


def _check_peer(probe: Probe, host: str, port: int,
                entries: list[tuple[str, str, str | None, int | None]]) -> Check:
    label = f"whitelist.{host}:{port}"
    try:
        _, _, der = probe.handshake(port, probe.context(client_cert=True), host=host)
        cert = x509.load_der_x509_certificate(der)
        validate(cert, TrustStore.with_peers(probe.s.pki_dir), purpose="server")
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return Check(label, FAIL, f"pair injoignable ({exc})")
    except CertError as exc:
        return Check(label, FAIL, f"certificat du pair refusé : {exc.message}")
    presented = normalise_dn(cert.subject.rfc4514_string())
    routed = [e for e in entries if e[2] == host and (e[3] or 25) == port]
    if routed:
        bad = [f"{d} attend « {dn} »" for d, dn, _, _ in routed if normalise_dn(dn) != presented]
        if bad:
            return Check(label, FAIL, f"DN présenté « {presented} » différent de la liste "
                         f"blanche : {'; '.join(bad)}")
        return Check(label, OK, f"DN « {presented} » conforme pour "
                     f"{', '.join(e[0] for e in routed)}")
    known = [d for d, dn, _, _ in entries if normalise_dn(dn) == presented]
    if not known:
        return Check(label, FAIL, f"DN présenté « {presented} » absent de la liste blanche")
    return Check(label, OK, f"DN « {presented} » en liste blanche ({', '.join(known)})")


# ---------------------------------------------------------------------------- SMTP behaviour
def sample_mailbox(app: App) -> str | None:
    """The first published personal mailbox of ours whose account may log in."""
    with app.db.transaction() as session:
        query = (select(Mailbox.address).where(Mailbox.operator_id.is_(None),
                                               Mailbox.kind == MailboxKind.PERSONAL,
                                               Mailbox.state == MailboxState.PUBLISHED)
                 .order_by(Mailbox.id))
        for address in session.scalars(query):
            account = find_account(session, address)
            if account is not None and account.state.value == "active":
                return address
    return None


def _submission(probe: Probe, user: str) -> smtplib.SMTP:
    """Logged in as the webmail's service account acting for ``user`` (AUTH PLAIN authzid)."""
    s = probe.s
    secret = (s.data_dir / "webmail.secret").read_text().strip()
    smtp = smtplib.SMTP(probe.host, s.submission_port, timeout=probe.timeout)
    smtp.starttls(context=ssl.create_default_context(cafile=str(s.pki_dir / "ca.pem")))
    smtp.ehlo("selftest.invalid")
    smtp.auth("PLAIN", lambda challenge=None: f"{user}\0webmail@{s.domain}\0{secret}",
              initial_response_ok=True)
    return smtp


def check_rcpt_refusal(probe: Probe, user: str | None) -> Check:
    """DESIGN.md step 3, CONVENTIONS 2: a recipient outside the trust space → 5xx at RCPT."""
    if user is None:
        return Check("smtp.rcpt_refusal", SKIP, "aucune boîte personnelle publiée")
    try:
        with _submission(probe, user) as smtp:
            smtp.mail(user)
            code, text = smtp.rcpt(OUTSIDER)
            smtp.rset()
    except (OSError, smtplib.SMTPException) as exc:
        return Check("smtp.rcpt_refusal", FAIL, f"soumission impossible ({exc})")
    reply = f"{code} {text.decode(errors='replace')}"
    if 500 <= code < 600:
        return Check("smtp.rcpt_refusal", OK, f"RCPT <{OUTSIDER}> refusé : {reply}")
    return Check("smtp.rcpt_refusal", FAIL, f"RCPT hors espace de confiance non refusé : {reply}")


def check_headers_survive(probe: Probe, user: str | None, wait: float = 30.0) -> Check:
    """An ``X-MSS-Test`` field submitted must reach the mailbox (read back over IMAP)."""
    if user is None:
        return Check("smtp.x_mss_headers", SKIP, "aucune boîte personnelle publiée")
    token = uuid.uuid4().hex
    raw = (f"From: {user}\r\nTo: {user}\r\nSubject: [mss selftest]\r\n"
           f"Message-ID: <{token}@selftest.invalid>\r\nX-MSS-Test: {token}\r\n"
           f"X-MSS-Trace: selftest-{token[:8]}\r\n\r\nAuto-test mss.\r\n").encode()
    try:
        with _submission(probe, user) as smtp:
            smtp.sendmail(user, [user], raw)
        found = _read_back(probe, user, token, wait)
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as exc:
        return Check("smtp.x_mss_headers", FAIL, f"envoi ou relecture impossible ({exc})")
    if found is None:
        return Check("smtp.x_mss_headers", FAIL, f"message non remis dans {user} en {wait:.0f} s")
    lost = [n for n in ("X-MSS-Test", "X-MSS-Trace") if not found.get(n)]
    if lost or found.get("X-MSS-Test") != token:
        return Check("smtp.x_mss_headers", FAIL, f"champs perdus au relais : {', '.join(lost)}")
    return Check("smtp.x_mss_headers", OK, f"X-MSS-Test et X-MSS-Trace conservés ({user})")


def _read_back(probe: Probe, user: str, token: str, wait: float) -> Message | None:
    creds = master_credentials(probe.s)
    ctx = ssl.create_default_context(cafile=str(probe.s.pki_dir / "ca.pem"))
    ctx.check_hostname = False
    deadline = time.monotonic() + wait
    with imaplib.IMAP4_SSL(probe.host, probe.s.imaps_port, ssl_context=ctx,
                           timeout=probe.timeout) as imap:
        imap.login(creds.login_for(user), creds.secret)
        while True:
            found = _fetch_and_delete(imap, "INBOX", token)
            if found is not None or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if found is not None:
            _fetch_and_delete(imap, "Sent", token)  # the sender's copy, when there is one
    return found


def _fetch_and_delete(imap: imaplib.IMAP4, folder: str, token: str) -> Message | None:
    if imap.select(folder)[0] != "OK":
        return None
    # By Message-ID, which the full-text index holds (mailstore.fts: header fields it does
    # not index, X-MSS-Test among them, match nothing); the field is then read from the copy.
    _, data = imap.search(None, "HEADER", "Message-ID", f"<{token}@selftest.invalid>")
    nums = data[0].split() if data and data[0] else []
    if not nums:
        return None
    _, parts = imap.fetch(nums[0], "(BODY.PEEK[HEADER])")
    header = parts[0]
    assert isinstance(header, tuple)  # a literal answers as (b"1 (BODY[HEADER] {n}", data)
    message = email.message_from_bytes(header[1])
    if message.get("X-MSS-Test") != token:
        return None
    for num in nums:
        imap.store(num, "+FLAGS", "\\Deleted")
    imap.expunge()
    return message


# ---------------------------------------------------------------------------- MDN, audit
def check_mdn(app: App) -> Check:
    """RFC 8098 §3: multipart/report; report-type=disposition-notification, a human part, a
    machine-readable part with Reporting-UA, Final-Recipient, Original-Message-ID, Disposition."""
    domain = app.settings.domain
    original = (f"From: a@{domain}\r\nTo: b@{domain}\r\nSubject: x\r\n"
                f"Message-ID: <mdn-selftest@{domain}>\r\nDisposition-Notification-To: a@{domain}"
                "\r\n\r\nx\r\n").encode()
    try:
        raw = build_mdn(original=original, final_recipient=f"b@{domain}",
                        reporting_ua=f"{app.settings.hostname}; mss", from_addr=f"b@{domain}")
    except ValueError as exc:
        return Check("mdn", FAIL, f"MDN impossible à construire ({exc})")
    msg = email.message_from_bytes(raw)
    payload = msg.get_payload()  # a list of sub-messages when multipart
    parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    problems = []
    if msg.get_content_type() != "multipart/report" or \
            msg.get_param("report-type") != "disposition-notification":
        problems.append("pas multipart/report; report-type=disposition-notification")
    if len(parts) < 2 or parts[0].get_content_type() != "text/plain":
        problems.append("première partie lisible absente")
    elif parts[1].get_content_type() != "message/disposition-notification":
        problems.append("deuxième partie non message/disposition-notification")
    else:
        text = str(parts[1])  # the email package parses the fields as sub-messages
        problems += [f"champ {f} absent" for f in ("Reporting-UA:", "Final-Recipient:",
                                                   "Original-Message-ID:", "Disposition:")
                     if f not in text]
    if msg["To"] != f"a@{domain}":
        problems.append("destinataire ≠ Disposition-Notification-To")
    if problems:
        return Check("mdn", FAIL, "; ".join(problems))
    return Check("mdn", OK, "accusé de réception conforme à RFC 8098 (3 parties)")


def check_audit(app: App) -> Check:
    """ECO.4.1.2: the hash chain of the audit trail is intact."""
    with app.db.transaction() as session:
        report = audit.verify(session)
    if not report.ok:
        where = f"enregistrement n° {report.first_bad_id}" if report.first_bad_id else "fin"
        return Check("audit", FAIL, f"journal d'audit altéré ({where}) : {report.reason}")
    return Check("audit", OK, f"journal d'audit intègre ({report.count} enregistrements)")


# ---------------------------------------------------------------------------- all together
def run_selftest(app: App, peers: Sequence[tuple[str, int]] = (), *,
                 progress: Callable[[Check], None] | None = None,
                 timeout: float = 10.0) -> Report:
    """Every check, in order; ``progress`` is called after each one."""
    probe, s = Probe(app, timeout), app.settings
    user = sample_mailbox(app)
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_tls(probe, "submission", s.submission_port, implicit=False, relay=False),
        lambda: check_tls(probe, "submissions", s.submissions_port, implicit=True, relay=False),
        lambda: check_tls(probe, "relay", s.relay_port, implicit=False, relay=True),
        lambda: check_certificate(probe, "submission", s.submission_port, implicit=False,
                                  relay=False),
        lambda: check_certificate(probe, "relay", s.relay_port, implicit=False, relay=True),
        lambda: check_whitelist(probe, peers),
        lambda: check_rcpt_refusal(probe, user),
        lambda: check_headers_survive(probe, user),
        lambda: check_mdn(app),
        lambda: check_audit(app),
    ]
    checks: list[Check] = []
    for step in steps:
        result = step()
        for check in result if isinstance(result, list) else [result]:
            checks.append(check)
            if progress:
                progress(check)
    return Report(checks)
