"""TLS for the webmail's WSGI server (cheroot): an *optional* client certificate, handed to the
application unverified, so that the application can say in French what is wrong with it.

Why pyOpenSSL and not Python's ``ssl``: with ``ssl.CERT_OPTIONAL`` OpenSSL still verifies a
presented certificate and aborts the handshake when it does not chain, has expired…; the browser
then shows a bare TLS error instead of a page. ``ssl`` has no verify callback to change that,
pyOpenSSL has: the callback below accepts whatever the client presents, and the application
validates it fully (chain to the trust-space CA, dates, CRL: ``certs.validation``) before using
it — a certificate is never trusted because it arrived over TLS. The CA names of ``ca.pem`` are
sent in the CertificateRequest so that a card middleware offers the CPS certificate.

The server certificate follows a renewal: ``wrap`` rebuilds the context when ``server.crt`` or
``server.key`` is replaced, for the connections that follow.

The handshake is *not* done in ``wrap``: that is cheroot's accept path, one thread for every
new connection, so a client that connected and sent nothing (or half a ClientHello) held up
every other visitor for the handshake's deadline (10 s each: twenty idle sockets, and nobody
could load a page; a browser's unused speculative connection did the same). The connection is
handed to cheroot in the accept state and the handshake runs in the worker thread that first
reads from it, once the client has sent something (cheroot's selector); a silent client costs
a file descriptor, a slow one a worker for ``HANDSHAKE_TIMEOUT`` at most. Then the client
certificate is put in the WSGI environ as ``SSL_CLIENT_CERT`` (PEM), as Apache's mod_ssl and
cheroot's builtin adapter name it (the environ dict ``wrap`` returned is filled in place,
before the request line is read).
"""

from __future__ import annotations

import logging
import select
import socket
import time
from pathlib import Path
from typing import Any

from cheroot.ssl.pyopenssl import pyOpenSSLAdapter
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

log = logging.getLogger("mss.webmail")

CLIENT_CERT_ENV = "SSL_CLIENT_CERT"
HANDSHAKE_TIMEOUT = 10.0
# TLS 1.2 suites with forward secrecy and AEAD only (ANSSI guide TLS, R5); TLS 1.3 suites are
# all acceptable and configured separately by OpenSSL.
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!SHA1"


class _Connection(SSL.Connection):
    """A server connection that waits for data instead of raising ``WantReadError``.

    cheroot sets a timeout on the socket (so it is non-blocking underneath) and reads request
    bodies through ``recv_into``, which its pyOpenSSL file wrapper does not retry: a body that
    arrives in several TLS records (a file upload, a long form) failed with ``WantReadError``.
    Here a read or write that would block waits on the socket, up to its timeout.
    (Added by the mail views' engineer, issue 6: compose POSTs failed in Chromium.)
    """

    def __init__(self, context: SSL.Context, sock: socket.socket) -> None:
        super().__init__(context, sock)
        self.tls_environ: dict[str, Any] = {}  # WSGI entries (``wrap``), completed below
        self._handshake_done = False

    def _handshaken(self) -> None:
        """Complete the handshake (first use, in a worker thread) and fill ``tls_environ``."""
        if self._handshake_done:
            return
        try:
            self._retry(time.monotonic() + HANDSHAKE_TIMEOUT, self.do_handshake)
        except (SSL.Error, OSError) as exc:
            from cheroot import errors

            raise errors.FatalSSLAlert(str(exc)) from exc  # cheroot closes it, quietly
        self._handshake_done = True
        self.tls_environ["SSL_PROTOCOL"] = self.get_protocol_version_name()
        self.tls_environ["SSL_CIPHER"] = self.get_cipher_name() or ""
        cert = self.get_peer_certificate(as_cryptography=True)
        if cert is not None:
            self.tls_environ[CLIENT_CERT_ENV] = cert.public_bytes(Encoding.PEM).decode("ascii")
            self.tls_environ["SSL_CLIENT_VERIFY"] = "UNCHECKED"  # the application validates

    def _wait(self, call: Any, *args: Any) -> Any:
        self._handshaken()
        timeout = self.gettimeout()
        return self._retry(None if timeout is None else time.monotonic() + timeout, call, *args)

    def _retry(self, deadline: float | None, call: Any, *args: Any) -> Any:
        """``call``, again each time the socket is ready, until it completes or ``deadline``
        passes (then ``TimeoutError``: socket.timeout, what cheroot expects when idle)."""
        while True:
            try:
                return call(*args)
            except SSL.WantReadError:
                readable, writable = [self], []
            except SSL.WantWriteError:
                readable, writable = [], [self]
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("timed out")
            select.select(readable, writable, [], remaining)

    def recv(self, *args: Any) -> Any:
        return self._wait(super().recv, *args)

    def recv_into(self, *args: Any) -> Any:
        return self._wait(super().recv_into, *args)

    def send(self, *args: Any) -> Any:
        return self._wait(super().send, *args)

    def sendall(self, *args: Any) -> Any:
        return self._wait(super().sendall, *args)


def _accept_any(_conn: Any, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    # Deliberate: the application validates the certificate (see the module docstring).
    return True


class ClientCertAdapter(pyOpenSSLAdapter):
    """cheroot TLS adapter: TLS ≥ 1.2, server certificate and key from files, optional client
    certificate passed to the application as ``SSL_CLIENT_CERT``."""

    def __init__(self, certificate: Path, private_key: Path, client_ca: Path | None) -> None:
        super().__init__(str(certificate), str(private_key))
        self.client_ca = client_ca
        self._stamp = _stamp(certificate, private_key)

    def get_context(self) -> SSL.Context:
        """The server context (see the module docstring)."""
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(TLS12_CIPHERS)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        context.use_certificate_chain_file(self.certificate)
        context.use_privatekey_file(self.private_key)
        context.check_privatekey()
        context.set_verify(SSL.VERIFY_PEER, _accept_any)
        context.set_session_id(b"mss-webmail")
        if self.client_ca is not None and self.client_ca.is_file():
            context.load_client_ca(str(self.client_ca).encode())
        return context

    def bind(self, sock: socket.socket) -> socket.socket:
        """Keep the listening socket plain; connections are wrapped one by one in ``wrap``."""
        if self.context is None:
            self.context = self.get_context()
        self._environ = self.get_environ()
        return sock

    def wrap(self, sock: socket.socket) -> tuple[Any, dict[str, Any]]:
        """The TLS connection, in the accept state, and its WSGI environ entries: completed
        by the handshake on first use (``_Connection._handshaken``; the module docstring)."""
        conn = _Connection(self._current_context(), sock)
        conn.set_accept_state()
        conn.tls_environ.update(self._environ)
        return conn, conn.tls_environ

    def _current_context(self) -> SSL.Context:
        """The context, rebuilt when the certificate or key file was replaced (``mss cert
        renew`` / ``install``): new connections present the new certificate. Files that do not
        load (a key renamed an instant before its certificate) keep the previous context until
        they change again."""
        stamp = _stamp(Path(self.certificate), Path(self.private_key))
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.context = self.get_context()
            except (SSL.Error, OSError) as exc:
                log.warning("certificat du webmail illisible (%s) : le précédent reste en "
                            "service", exc)
        return self.context

    def get_environ(self) -> dict[str, Any]:
        """Connection-independent entries (not the server certificate's details)."""
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}


def _stamp(*paths: Path) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            stamps.append((0, 0))
            continue
        stamps.append((st.st_mtime_ns, st.st_ino))
    return tuple(stamps)
