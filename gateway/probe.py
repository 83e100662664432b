"""Probe of the peer operators' relays (issue #20, the trust space's health).

For each relay a whitelisted domain routes to (``Outbound.route``'s rule: ``relay_host`` and
``relay_port``, else the domain on port 25), the probe does what a delivery does before
MAIL FROM and stops there: EHLO, STARTTLS (RFC 3207) with our operator certificate and the
very context deliveries use (``gateway.smtp.tls.peer_client_context``), EHLO again — with TLS 1.3
a peer refusing our certificate says so only now (RFC 8446 §4.4.2.4) — then QUIT. No mail
is sent. The peer's certificate is then checked as ``gateway.deliver.outbound`` checks it: chain to
our trusted peer CAs, revocation against the CRL we hold for its issuer (``pki/peers/``),
subject DN equal to the whitelist's ``DNCertificatOperateur`` of each domain.

When OpenSSL itself refuses the certificate (expired, unknown authority), a second session
with verification off (``gateway.smtp.tls.peer_inspection_context``) reads it, so that the result
says by what date or which issuer. Each session is bounded (``timeout`` for all its steps)
and a few relays are probed at once (``concurrency``). Plain data out, no database here:
``peers.health`` stores the results (``check`` below probes and stores).
"""

from __future__ import annotations

import dataclasses
import smtplib
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from certs._x509util import serial_hex
from certs.errors import CertError
from certs.validation import TrustStore, validate
from core import audit
from core.db import Database
from core.errors import ConfigError
from core.settings import Settings
from gateway.smtp import tls
from peers import health
from peers.results import Failure, ProbeResult, Target
from trust_space.errors import NamingError
from trust_space.naming import normalise_dn

TIMEOUT = 5.0  # seconds for one whole session (connection, EHLO, STARTTLS, EHLO, QUIT)
CONCURRENCY = 4  # relays probed at once
_DAY = 86400.0


@dataclass
class Session:
    """What one SMTP session with a relay showed."""

    failure: Failure | None = None
    detail: str = ""
    version: str = ""
    cipher: str = ""
    cert: x509.Certificate | None = None


@dataclass(frozen=True)
class Certificate:
    """The peer certificate's facts, whatever the domain."""

    subject_dn: str
    not_after: datetime
    chain: str  # valid / invalid
    chain_detail: str
    revocation: str  # good / revoked / unchecked
    revocation_detail: str


# ---------------------------------------------------------------------- one session
def _limit(smtp: smtplib.SMTP, deadline: float) -> None:
    """Give the next step only the time left (the bound is for the whole session)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("délai écoulé")
    if smtp.sock is not None:
        smtp.sock.settimeout(left)


def talk(host: str, port: int, hostname: str, context: ssl.SSLContext,
         timeout: float) -> Session:
    """EHLO, STARTTLS, EHLO, QUIT with ``host:port``; never raises (the failure is in the
    result)."""
    seen, deadline = Session(), time.monotonic() + timeout
    smtp: smtplib.SMTP | None = None
    try:
        smtp = smtplib.SMTP(host, port, local_hostname=hostname, timeout=timeout)
        _limit(smtp, deadline)
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            seen.failure, seen.detail = Failure.NO_STARTTLS, (
                f"{host}:{port} n'offre pas STARTTLS après EHLO")
            return seen
        _limit(smtp, deadline)
        smtp.starttls(context=context)
        sock = smtp.sock
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            seen.version, seen.cipher = sock.version() or "", cipher[0] if cipher else ""
            seen.cert = tls.peer_certificate(sock)
        _limit(smtp, deadline)
        try:
            code = _ehlo_again(smtp)
        except _Closed:
            seen.failure, seen.detail = Failure.TLS_CLOSED, _closed(host, port)
            return seen
        if code != 250:
            seen.failure, seen.detail = Failure.SMTP, f"EHLO après STARTTLS refusé ({code})"
            return seen
        _limit(smtp, deadline)
        smtp.quit()
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        seen.failure, seen.detail = _failure(exc, host, port, timeout)
    finally:
        if smtp is not None:
            smtp.close()
    return seen


class _Closed(Exception):
    """The peer hung up after the handshake without a TLS alert."""


def _ehlo_again(smtp: smtplib.SMTP) -> int:
    """EHLO after STARTTLS, written by hand: with TLS 1.3 a peer refusing our certificate
    says so only now, by an alert that may arrive before our EHLO is sent (smtplib would then
    close the socket on the failed write, alert unread). An asyncio server (aiosmtpd, hence
    mss itself) drops the connection without flushing its alert: ``_Closed``."""
    sock = smtp.sock
    assert sock is not None
    try:
        sock.sendall(f"EHLO {smtp.local_hostname}\r\n".encode("ascii", "replace"))
    except OSError:
        try:
            if not sock.recv(64):  # the peer's alert, when it sent one, is raised here
                raise _Closed from None
        except ConnectionResetError:
            raise _Closed from None
        raise
    try:
        return smtp.getreply()[0]
    except smtplib.SMTPServerDisconnected as exc:
        cause = exc.__context__
        if isinstance(cause, OSError) and not isinstance(cause, ConnectionResetError):
            raise
        raise _Closed from None


def _closed(host: str, port: int) -> str:
    return (f"{host}:{port} a fermé la connexion pendant ou juste après la négociation TLS, "
            "sans alerte : il refuse sans doute notre certificat d'opérateur (notre autorité "
            "est-elle parmi ses autorités de confiance ?)")


def _failure(exc: BaseException, host: str, port: int, timeout: float) -> tuple[Failure, str]:
    """The failure and a French sentence saying precisely what happened."""
    where = f"{host}:{port}"
    cause = exc.__context__
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(cause, OSError):
        exc = cause  # smtplib hides a timeout or a TLS alert on reading a reply
    if isinstance(exc, ssl.SSLEOFError):
        return Failure.TLS_CLOSED, _closed(host, port)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure.TLS_VERIFY, f"{exc.verify_message} (OpenSSL, code {exc.verify_code})"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").lower().replace("_", " ")
        if "alert" in reason:
            return Failure.TLS_ALERT, f"« {reason} » reçue de {where}"
        return Failure.TLS, f"{reason or exc.__class__.__name__} avec {where}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Failure.SMTP, f"{where} a fermé la connexion"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        return Failure.SMTP, f"réponse inattendue de {where} : {exc.smtp_code} {text[:200]}"
    if isinstance(exc, smtplib.SMTPException):
        return Failure.SMTP, f"dialogue SMTP avec {where} impossible ({exc})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure.TIMEOUT, f"{where} n'a pas répondu en {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return Failure.REFUSED, f"{where} refuse la connexion (aucun relais à cette adresse ?)"
    if isinstance(exc, socket.gaierror):
        return Failure.DNS, f"{host} ({exc.strerror})"
    if isinstance(exc, OSError):
        return Failure.UNREACHABLE, f"{where} ({exc.strerror or exc})"
    return Failure.SMTP, f"réponse illisible de {where} ({exc.__class__.__name__}: {exc})"


# ---------------------------------------------------------------------- the certificate
def examine(cert: x509.Certificate, store: TrustStore, now: datetime) -> Certificate:
    """Chain (against our CA and the trusted peers', as deliveries check it) and revocation
    (against the CRLs we hold) of the peer's certificate."""
    without_crls = dataclasses.replace(store, crls={})
    try:
        chain = validate(cert, without_crls, purpose="server", at=now)
    except CertError as exc:
        chain_state, chain_detail, chain = "invalid", exc.message, [cert]
    else:
        root = chain[-1].subject.rfc4514_string()
        chain_state, chain_detail = "valid", f"jusqu'à l'autorité « {root} »"
    state, detail = revocation(chain, store, now)
    return Certificate(cert.subject.rfc4514_string(), cert.not_valid_after_utc, chain_state,
                       chain_detail, state, detail)


def revocation(chain: Sequence[x509.Certificate], store: TrustStore,
               now: datetime) -> tuple[str, str]:
    """``revoked``, ``good`` (every certificate below the root looked up on a CRL we hold)
    or ``unchecked`` (no CRL of an issuer: say whose), with a French sentence."""
    members = chain[:-1] if len(chain) > 1 else chain
    missing: list[str] = []
    checked: list[str] = []
    for cert in members:
        crl = store.crls.get(cert.issuer)
        if crl is None:
            missing.append(cert.issuer.rfc4514_string())
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return "revoked", (f"numéro de série {serial_hex(cert.serial_number)} inscrit le "
                               f"{entry.revocation_date_utc:%d/%m/%Y} sur la CRL de "
                               f"« {crl.issuer.rfc4514_string()} »")
        checked.append(_crl_words(crl, now))
    if missing:
        return "unchecked", ("aucune CRL de « " + " », « ".join(missing)
                             + " » parmi les autorités des pairs (pki/peers/)")
    return "good", " ; ".join(checked)


def _crl_words(crl: x509.CertificateRevocationList, now: datetime) -> str:
    words = f"CRL de « {crl.issuer.rfc4514_string()} » du {crl.last_update_utc:%d/%m/%Y}"
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        words += f", périmée depuis le {crl.next_update_utc:%d/%m/%Y}"
    return words


# ---------------------------------------------------------------------- a relay, all relays
@dataclass(frozen=True)
class Contexts:
    """What a run shares between its threads: the delivery context, its inspection twin,
    the trust store and our host name."""

    client: ssl.SSLContext
    inspection: ssl.SSLContext
    store: TrustStore
    hostname: str

    @classmethod
    def of(cls, settings: Settings) -> Contexts:
        """Raises ConfigError: our operator certificate, key or CA is missing or unreadable."""
        try:
            return cls(tls.peer_client_context(settings), tls.peer_inspection_context(settings),
                       TrustStore.with_peers(settings.pki_dir), settings.hostname)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Certificat opérateur ou autorités illisibles dans "
                              f"{settings.pki_dir} ({exc.__class__.__name__}) : lancez "
                              "« mss init » ou « mss cert status »") from None


def probe_relay(target: Target, contexts: Contexts, timeout: float = TIMEOUT) -> list[ProbeResult]:
    """One session with the relay (two when OpenSSL refused its certificate); a result per
    domain of ``target``."""
    started, at = time.monotonic(), datetime.now(UTC)
    seen = talk(target.host, target.port, contexts.hostname, contexts.client, timeout)
    if seen.failure is Failure.TLS_VERIFY:
        look = talk(target.host, target.port, contexts.hostname, contexts.inspection, timeout)
        seen.version, seen.cipher, seen.cert = look.version, look.cipher, look.cert
    facts = examine(seen.cert, contexts.store, at) if seen.cert is not None else None
    spent = int((time.monotonic() - started) * 1000)
    return [_verdict(target, domain, dn, seen, facts, at, spent) for domain, dn in target.domains]


def _verdict(target: Target, domain: str, expected: str, seen: Session,
             facts: Certificate | None, at: datetime, spent: int) -> ProbeResult:
    problems: list[tuple[Failure, str]] = []
    if seen.failure is not None:
        problems.append((seen.failure, seen.detail))
    match: bool | None = None
    if facts is not None:
        match = same_dn(facts.subject_dn, expected)
        if facts.chain == "invalid":
            problems.append((Failure.CHAIN, facts.chain_detail))
        if facts.revocation == "revoked":
            problems.append((Failure.REVOKED, facts.revocation_detail))
        if not match:
            problems.append((Failure.DN_MISMATCH, f"présenté « {facts.subject_dn} », liste "
                             f"blanche « {expected} »"))
    elif seen.failure is None:
        problems.append((Failure.TLS, "aucun certificat présenté par le pair"))
    return ProbeResult(
        domain, target.host, target.port, at, not problems,
        problems[0][0].value if problems else "", " ; ".join(d for _, d in problems),
        seen.version, seen.cipher, facts.subject_dn if facts else "", expected, match,
        facts.chain if facts else "", facts.chain_detail if facts else "",
        facts.revocation if facts else "", facts.revocation_detail if facts else "",
        facts.not_after if facts else None, spent)


def same_dn(presented: str, expected: str) -> bool:
    """The comparison ``gateway.deliver.outbound`` makes (a whitelist DN that does not parse matches
    nothing)."""
    try:
        return normalise_dn(presented) == normalise_dn(expected)
    except NamingError:
        return False


def probe_all(targets: Sequence[Target], contexts: Contexts, *, timeout: float = TIMEOUT,
              concurrency: int = CONCURRENCY) -> list[ProbeResult]:
    """Every relay, ``concurrency`` at a time; the results in domain order."""
    if not targets:
        return []
    workers = max(1, min(concurrency, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peer-probe") as pool:
        found = [r for rs in pool.map(lambda t: probe_relay(t, contexts, timeout), targets)
                 for r in rs]
    return sorted(found, key=lambda r: r.domain)


def check(db: Database, settings: Settings, *, domains: Iterable[str] | None = None,
          requested_by: str, actor: str, details: Mapping[str, object] | None = None,
          timeout: float = TIMEOUT,
          concurrency: int = CONCURRENCY) -> list[ProbeResult]:
    """Probe the peers (all, or ``domains``), store the results and audit the run
    (``peers.check``: who, which, which failed).

    Raises:
        NotFound: a domain asked for is not whitelisted.
        ConfigError: our operator certificate or CA cannot be read.
    """
    with db.read() as session:
        found = health.targets(session, settings.domain, domains)
    contexts = Contexts.of(settings)
    results = probe_all(found, contexts, timeout=timeout, concurrency=concurrency)
    failed = [r.domain for r in results if not r.ok]
    with db.transaction() as session:
        health.save(session, results, requested_by)
        audit.record(session, actor=actor[:254], action="peers.check",
                     target=",".join(sorted(domains))[:254] if domains is not None else "*",
                     outcome="failed" if failed else "ok",
                     request={**(details or {}), "peers": len(results),
                              "failed": failed[:50], "by": requested_by})
    return results
