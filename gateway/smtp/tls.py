"""TLS contexts of the gateway's listeners and of its client towards peer operators.

- Submission (STARTTLS, RFC 3207) and submissions (implicit TLS, RFC 8314): ``pki/server.crt``,
  TLS ≥ 1.2, a client certificate *requested but optional* so that SASL EXTERNAL (RFC 4422
  appendix A) can use a card or applicative certificate; TLS 1.2 suites are
  ``certs.suites.MODERN_TLS12_SUITES`` (ECDHE + AEAD), the same list as Dovecot's IMAP. The
  certificate's chain is checked by OpenSSL against our CA and the peers'
  (``TrustStore.with_peers``); revocation is checked by the gateway at AUTH time, so a revoked
  certificate gets a precise ``535 5.7.8`` instead of a broken handshake.
- Relay (inter-operator, STARTTLS on the relay port): ``pki/operator.crt``, client certificate
  *required*, only the ECO.1.1.3 suites for TLS 1.2 (ECDHE-RSA with AES-GCM or AES-CBC-SHA2)
  plus TLS 1.3.
- Renewal: the listeners rebuild their contexts when ``certificate_stamp`` changes (``mss cert
  renew`` / ``install`` swap the files), so new connections present the new certificate
  without a restart (``gateway.smtp.listeners.Listeners._context``).
- Client to a peer relay: presents ``pki/operator.crt``; the peer's chain is verified against
  the same bundle, its name is not (the whitelist pins the subject DN instead, checked by
  ``gateway.deliver.outbound``). The probe of peers (``gateway.probe``) uses this same context, and
  only to read a certificate that context refused, the same one with verification off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from certs.suites import MODERN_TLS12_SUITES
from core.settings import Settings

# MSSanté ECO.1.1.3 — the only TLS 1.2 suites allowed between operators.
ECO_SUITES = ":".join((
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA256",
))


def trust_bundle(pki_dir: Path) -> str:
    """Our CA plus every peer CA (``pki/peers/*.pem``), as PEM text for ``load_verify_locations``.

    CRL blocks are left out: OpenSSL only uses them with CRL flags, and revocation is checked
    in Python against ``TrustStore.with_peers`` where the reply can say why.
    """
    parts = [(pki_dir / "ca.pem").read_text("ascii")]
    for extra in sorted((pki_dir / "peers").glob("*.pem")):
        text = extra.read_text("ascii", errors="replace")
        if "BEGIN CERTIFICATE" in text:
            parts.append(text)
    return "\n".join(parts)


OWN_FILES = ("server.crt", "server.key", "operator.crt", "operator.key")


def certificate_stamp(pki_dir: Path, names: tuple[str, ...] = OWN_FILES
                      ) -> tuple[tuple[int, int], ...]:
    """Changes when one of these certificates or keys is replaced on disk (a renewal writes a
    new file and renames it over the old one): the listeners rebuild their contexts then."""
    stamps = []
    for name in names:
        try:
            st = (pki_dir / name).stat()
        except OSError:
            stamps.append((0, 0))
            continue
        stamps.append((st.st_mtime_ns, st.st_ino))
    return tuple(stamps)


def _base(purpose: ssl.Purpose, cert: Path, key: Path, pki_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(cadata=trust_bundle(pki_dir))
    return context


def submission_context(settings: Settings) -> ssl.SSLContext:
    """Server context of the submission ports: client certificate optional."""
    pki = settings.pki_dir
    context = _base(ssl.Purpose.CLIENT_AUTH, pki / "server.crt", pki / "server.key", pki)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_ciphers(MODERN_TLS12_SUITES)  # the same list as Dovecot's IMAP (certs.suites)
    return context


def relay_context(settings: Settings) -> ssl.SSLContext:
    """Server context of the relay port: mutual TLS, ECO.1.1.3 suites (TLS 1.3 suites are all
    AEAD and stay allowed)."""
    pki = settings.pki_dir
    context = _base(ssl.Purpose.CLIENT_AUTH, pki / "operator.crt", pki / "operator.key", pki)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_ciphers(ECO_SUITES)
    return context


def peer_client_context(settings: Settings) -> ssl.SSLContext:
    """Client context towards a peer's relay: our operator certificate, peer chain verified,
    host name not (the subject DN is pinned by the whitelist)."""
    pki = settings.pki_dir
    context = _base(ssl.Purpose.SERVER_AUTH, pki / "operator.crt", pki / "operator.key", pki)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_ciphers(ECO_SUITES)
    return context


def peer_inspection_context(settings: Settings) -> ssl.SSLContext:
    """``peer_client_context`` with the peer's chain not verified by OpenSSL: only for the
    probe, after that context refused a peer's certificate (expired, unknown authority), to
    read the certificate and say which, by what date and with which DN. Never used to send
    mail: the probe quits before MAIL FROM."""
    context = peer_client_context(settings)
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The certificate the other side presented, or None."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """``version=TLS1.3 cipher=…`` for the Received field (RFC 8314 §4.3 style), or ""."""
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    version = ssl_object.version() or ""
    name = cipher[0] if cipher else ""
    return f"(version={version.replace('v', '')} cipher={name})"
