"""LMTP over TLS for gateways on other hosts (``MSS_LMTP_URL=lmtps://host:port``, issue #19).

The mail store's role in ``mss run`` listens on ``MSS_LISTEN_ADDRESS``:``port``, completes a
TLS 1.2+ handshake that **requires** a client certificate, and only then joins the connection
to Dovecot's LMTP unix socket; from there on the bytes pass unchanged (LMTP is Dovecot's).

Why not Dovecot's own ``inet_listener`` with ``ssl = yes``: Dovecot 2.3.19 checks a client
certificate that is sent (``ssl_verify_client_cert``, ``ssl_ca``: a foreign one fails the
handshake) but does not require one on LMTP — ``auth_ssl_require_client_cert`` applies to
logins, and LMTP has none. Measured: a TLS client without a certificate got ``220`` and
``LHLO`` answered, and so did a professional's card certificate. LMTP delivers into any
mailbox, so both must be refused: here the certificate is required (``CERT_REQUIRED``),
chained to the trust space's CA, checked against the CRL (``pki/crl.pem``), for client
authentication, and it must be a gateway's (``LMTP_CLIENT_NAME``, issued by ``mss init`` or
``mss cert issue lmtp``), not a card's or a practice software's.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from certs.suites import MODERN_TLS12_SUITES
from core.settings import LmtpEndpoint, Settings

log = logging.getLogger("mss.mailstore.lmtps")

# The CN of every gateway's LMTP client certificate starts with this (certs issued by mss).
LMTP_CLIENT_NAME = "mss-passerelle-lmtp"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # Dovecot's own LMTP idle limit (lmtp-client.c: 5 minutes)
_CHUNK = 65536


def is_gateway_certificate(peer: Mapping[str, Any]) -> bool:
    """Whether a verified peer certificate (``SSLSocket.getpeercert()``) is a gateway's LMTP
    client certificate: CN ``LMTP_CLIENT_NAME`` (alone or followed by a space and the
    gateway's name), and no mailbox in it (no serialNumber, no e-mail address)."""
    subject = peer.get("subject", ())
    fields = [pair for rdn in subject for pair in rdn] if isinstance(subject, tuple) else []
    names = [value for key, value in fields if key == "commonName"]
    if len(names) != 1 or any(key in ("serialNumber", "emailAddress") for key, _ in fields):
        return False
    alt = peer.get("subjectAltName", ())
    if isinstance(alt, tuple) and any(kind == "email" for kind, _ in alt):
        return False
    cn = str(names[0])
    return cn == LMTP_CLIENT_NAME or cn.startswith(LMTP_CLIENT_NAME + " ")


def server_context(settings: Settings, client_ca: Path) -> ssl.SSLContext:
    """TLS 1.2+ with the server certificate; a client certificate required, verified against
    ``client_ca`` (the CA bundle with its CRLs, ``mailstore.config.write_client_ca``)."""
    pki = settings.pki_dir.resolve()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_TLS12_SUITES)  # TLS 1.3: OpenSSL's three AEAD suites
    context.load_cert_chain(str(pki / "server.crt"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(client_ca))
    # RFC 5280 §6.3; like Dovecot's ssl_require_crl, no CRL means no client is accepted
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if b"BEGIN X509 CRL" not in client_ca.read_bytes():
        log.warning("%s sans CRL : aucun certificat client LMTP ne sera accepté", client_ca)
    return context


class LmtpTlsFront:
    """Listens for gateways over TLS and joins each authenticated one to Dovecot's LMTP
    socket (see the module docstring). One thread per connection."""

    def __init__(self, settings: Settings, endpoint: LmtpEndpoint, lmtp_socket: Path,
                 client_ca: Path) -> None:
        self.settings, self.endpoint = settings, endpoint
        self.lmtp_socket, self.client_ca = lmtp_socket, client_ca
        self.refused = 0  # connections refused at TLS or certificate (tests, metrics)
        self._context: ssl.SSLContext | None = None
        self._stamp: tuple[int, int] | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.listen_address, self.endpoint.port

    def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the port cannot be bound (taken, address not on this host).
        """
        self.context()  # fail now, not at the first gateway, on a bad certificate
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(self.address)
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="lmtps-accept", daemon=True)
        self._thread.start()
        log.info("LMTP sur TLS à l'écoute sur %s:%s (certificat client exigé)", *self.address)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        if self._thread is not None:
            self._thread.join(5)

    def context(self) -> ssl.SSLContext:
        """The server context, rebuilt when the CA/CRL bundle changes (a new CRL takes effect
        at the next connection, as with Dovecot's reload)."""
        st = self.client_ca.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._context is None or stamp != self._stamp:
                self._context = server_context(self.settings, self.client_ca)
                self._stamp = stamp
            return self._context

    def _serve(self) -> None:
        while self._listener is not None:
            try:
                raw, peer = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw, peer[0]), name="lmtps-conn",
                             daemon=True).start()

    def _handle(self, raw: socket.socket, peer: str) -> None:
        raw.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context().wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.refused += 1
            log.warning("LMTP sur TLS : connexion de %s refusée (%s)", peer,
                        getattr(exc, "reason", None) or type(exc).__name__)
            raw.close()
            return
        with tls:
            cert = tls.getpeercert() or {}
            if not is_gateway_certificate(cert):
                self.refused += 1
                log.warning("LMTP sur TLS : certificat de %s refusé (pas celui d'une "
                            "passerelle, numéro de série %s)", peer, cert.get("serialNumber"))
                return
            log.debug("LMTP sur TLS : passerelle %s (certificat %s) acceptée", peer,
                      cert.get("serialNumber"))
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as store:
                    store.settimeout(IDLE_TIMEOUT)
                    store.connect(str(self.lmtp_socket))
                    tls.settimeout(IDLE_TIMEOUT)
                    _splice(tls, store)
            except (OSError, ssl.SSLError) as exc:
                log.info("LMTP sur TLS : connexion de %s close (%s)", peer, type(exc).__name__)


def _splice(tls: ssl.SSLSocket, store: socket.socket) -> None:
    """Copy both ways until either side closes. One thread: an SSL object must not be read and
    written from two threads at once; ``pending()`` covers bytes OpenSSL already decrypted."""
    while True:
        ready = [tls] if tls.pending() else select.select([tls, store], [], [],
                                                          IDLE_TIMEOUT)[0]
        if not ready:
            return  # idle too long
        if tls in ready:
            data = tls.recv(_CHUNK)
            if not data:
                return
            store.sendall(data)
        if store in ready:
            data = store.recv(_CHUNK)
            if not data:
                return
            tls.sendall(data)
