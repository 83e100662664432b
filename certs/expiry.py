"""How long our own certificates and CRL stay valid, read from the PKI directory.

An operator whose relay certificate expires is cut off from every peer at once, and a CRL past
its ``nextUpdate`` makes peers (and our own Dovecot, ``ssl_require_crl``) refuse every client
certificate: both must be seen weeks ahead. This module reads the files the services use
(``server.crt``, ``operator.crt``, ``ca.pem``, ``crl.pem``: see ``certs.pki``) and says how many
days are left; the gateway exports it as metrics, ``mss cert status`` prints it. No network,
no policy: a file that is missing or unreadable is reported as such, never raised.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from certs._x509util import as_utc

# (label, file): the leaf is the first certificate of a full-chain file.
LEAVES = (("server", "server.crt"), ("operator", "operator.crt"))
_PEM = re.compile(rb"-----BEGIN (CERTIFICATE|X509 CRL)-----.+?-----END \1-----", re.S)
_DAY = 86400.0


@dataclass(frozen=True)
class Validity:
    """One certificate or CRL: ``label`` (server, operator, issuing_ca, root_ca, crl),
    the subject (or CRL issuer), the end of validity (``notAfter`` / ``nextUpdate``) and the
    days left from ``now`` (negative once past). ``error`` instead when the file is unusable."""

    label: str
    path: Path
    subject: str = ""
    until: datetime | None = None
    days: float | None = None
    error: str = ""


def status(pki_dir: Path, now: datetime | None = None) -> list[Validity]:
    """Our server, operator and CA certificates and the CRL, in that order."""
    now = as_utc(now)
    found = [_leaf(label, pki_dir / name, now) for label, name in LEAVES]
    found += list(_authorities(pki_dir / "ca.pem", now))
    found.append(_crl(pki_dir / "crl.pem", now))
    return found


def _blocks(path: Path, kind: bytes) -> list[bytes]:
    return [m.group(0) for m in _PEM.finditer(path.read_bytes()) if m.group(1) == kind]


def _days(until: datetime, now: datetime) -> float:
    return round((as_utc(until) - now).total_seconds() / _DAY, 3)


def _leaf(label: str, path: Path, now: datetime) -> Validity:
    try:
        cert = x509.load_pem_x509_certificate(_blocks(path, b"CERTIFICATE")[0])
    except (OSError, ValueError, IndexError) as exc:
        return Validity(label, path, error=_why(exc))
    until = cert.not_valid_after_utc
    return Validity(label, path, cert.subject.rfc4514_string(), until, _days(until, now))


def _authorities(path: Path, now: datetime) -> Iterator[Validity]:
    """``ca.pem``: the issuing CA then the root (self-signed), as ``mss init`` writes it."""
    try:
        certs = [x509.load_pem_x509_certificate(b) for b in _blocks(path, b"CERTIFICATE")]
    except (OSError, ValueError) as exc:
        yield Validity("ca", path, error=_why(exc))
        return
    if not certs:
        yield Validity("ca", path, error="aucun certificat")
    for cert in certs:
        label = "root_ca" if cert.issuer == cert.subject else "issuing_ca"
        until = cert.not_valid_after_utc
        yield Validity(label, path, cert.subject.rfc4514_string(), until, _days(until, now))


def _crl(path: Path, now: datetime) -> Validity:
    """The earliest ``nextUpdate`` of the CRLs in ``crl.pem`` (the issuing CA's and the
    root's, renewed together by ``mss run`` and ``mss cert crl``)."""
    try:
        crls = [x509.load_pem_x509_crl(b) for b in _blocks(path, b"X509 CRL")]
    except (OSError, ValueError) as exc:
        return Validity("crl", path, error=_why(exc))
    dated = [(until, c) for c in crls if (until := c.next_update_utc) is not None]
    if not dated:
        return Validity("crl", path, error="aucune liste de révocation datée")
    until, first = min(dated, key=lambda pair: pair[0])
    return Validity("crl", path, first.issuer.rfc4514_string(), until, _days(until, now))


def _why(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "fichier absent"
    if isinstance(exc, OSError):
        return f"illisible ({exc.strerror})"
    return "aucun certificat" if isinstance(exc, IndexError) else "format invalide"
