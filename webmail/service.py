"""The webmail as a service of ``mss run`` (``mss.run.Service``): the Flask application served
over HTTPS by cheroot, a production WSGI server, with an optional client certificate
(``webmail.tls``) on ``MSS_LISTEN_ADDRESS:MSS_WEB_PORT``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

from core.db import Database
from core.errors import ConfigError
from core.mailer import Mailer
from core.settings import Settings
from webmail import create_app
from webmail.auth.sms import SmsProvider
from webmail.context import PeerCheck
from webmail.mail import live
from webmail.mail.undo import outbox_of
from webmail.tls import ClientCertAdapter

log = logging.getLogger("mss.webmail")

THREADS = 16  # worker threads for requests: they are short, IMAP work is I/O bound
# cheroot's pool is fixed (it never grows by itself): the live updates' event streams
# (webmail.mail.live), each holding a thread for up to a minute, get MSS_WEB_EVENT_STREAMS
# threads of their own on top, so that ordinary requests always keep THREADS.
http_log = logging.getLogger("mss.webmail.http")


def db_connections(settings: Settings) -> int:
    """Database connections the webmail may hold at once: one per request thread and two for
    the delayed-send outbox; the event streams' brief session checks share the pool's overflow."""
    return THREADS + 2


class _HttpConnection(cheroot_server.HTTPConnection):
    """cheroot's connection without its reference cycle, so that it is freed when closed.

    cheroot (11.1) stores on each connection two ``lru_cache`` wrappers of its own bound
    methods (peer credentials of a UNIX socket, unused on TCP): the connection refers to
    itself, so it, its socket and its TLS connection (OpenSSL's buffers, tens of KB of native
    memory) were freed only by a full collection of the cyclic garbage collector, which comes
    once the Python heap's long-lived objects have grown by a quarter: thousands of connections
    apart. The webmail's RSS grew by several KB per TLS connection (issue 19:
    ``bench/webmail_rss.py``). Without the two instance attributes the class's methods are
    used, uncached. Reported upstream: cherrypy/cheroot#746 (fix proposed in #755)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("resolve_peer_creds", "get_peer_creds"):
            self.__dict__.pop(name, None)
        self.heard_from = False  # the client has sent something (``_Server.process_conn``)


class _Server(wsgi.Server):
    """cheroot's server, logging through ``logging`` instead of writing to stderr. Browsers
    and proxies routinely drop TLS connections; those are reported at DEBUG only. Its
    connections are ``_HttpConnection`` (no reference cycle)."""

    ConnectionClass = _HttpConnection

    def process_conn(self, conn: Any) -> None:
        """A new connection waits in cheroot's selector until the client sends something;
        only then does a worker thread take it. cheroot hands a connection just accepted to a
        worker at once, which then waits up to ``timeout`` (10 s) for the TLS ClientHello:
        sixteen sockets opened and left silent (a browser's unused speculative connections,
        or someone doing it on purpose) and no visitor was served for ten seconds. In the
        selector a silent connection costs a file descriptor until cheroot expires it after
        ``timeout``. (The handshake itself runs in the worker: ``webmail.tls``.)"""
        if isinstance(conn, _HttpConnection) and not conn.heard_from:
            conn.heard_from = True
            connections: Any = self._connections  # type: ignore[attr-defined]  # cheroot's
            connections.put(conn)  # to a worker when readable (at once if it is)
            return
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        text = str(msg)
        if "EPIPE" in text or "ECONNRESET" in text or "peer dropped" in text:
            level, traceback = logging.DEBUG, False
        http_log.log(level, "%s", text, exc_info=traceback)


def closing_responses(app: Any) -> Any:
    """The WSGI ``app`` whose responses are always closed (PEP 3333), even by cheroot: its
    ``respond`` sends the headers in a ``finally`` *before* calling ``close()``, so when a
    browser has gone away (a page left while a script loads) the send raises and the response,
    a static file's open handle among them, is dropped unclosed (a ResourceWarning, a file
    descriptor until the garbage collector). Here the response is read through a generator
    whose ``finally`` closes it; CPython runs it as soon as cheroot drops the generator."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        response = app(environ, start_response)

        def chunks() -> Any:
            try:
                yield from response
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
        return chunks()

    return wrapped


class WebmailService:
    """HTTPS server of the webmail (see the module docstring)."""

    name = "webmail"

    def __init__(self, settings: Settings, db: Database, *, mailer: Mailer | None = None,
                 sms: SmsProvider | None = None,
                 test_config: Mapping[str, Any] | None = None,
                 peer_check: PeerCheck | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings, db, test_config, mailer=mailer, sms=sms,
                              peer_check=peer_check)
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``web_port = 0``)."""
        if self._server is None:
            return self.settings.web_port
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        """Bind and serve in a background thread.

        Raises:
            ConfigError: server certificate missing (run ``mss init``) or port unavailable.
        """
        pki = self.settings.pki_dir
        crt, key = pki / "server.crt", pki / "server.key"
        if not (crt.is_file() and key.is_file()):
            raise ConfigError(f"Certificat du serveur web absent ({crt}) : lancez « mss init ».")
        server = _Server((self.settings.listen_address, self.settings.web_port),
                         closing_responses(self.app),
                         numthreads=THREADS + self.settings.web_event_streams,
                         server_name=self.settings.hostname)
        server.ssl_adapter = ClientCertAdapter(crt, key, pki / "ca.pem")
        try:
            server.prepare()
        except OSError as exc:
            raise ConfigError(f"Webmail : impossible d'écouter sur {self.settings.listen_address}"
                              f":{self.settings.web_port} ({exc})") from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="webmail", daemon=True)
        self._thread.start()
        # Messages held for « Annuler » leave from here, those due while no webmail ran first.
        outbox_of(self.app).start()
        log.info("webmail démarré : %s", self.endpoints()[0])

    def stop(self) -> None:
        outbox_of(self.app).stop()
        live.shutdown(self.app)  # the streams end, their threads come back to the pool
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(10)
        log.info("webmail arrêté")

    def reload(self) -> None:
        """Nothing to do: the CA and CRL are re-read by the application when they change."""

    def endpoints(self) -> list[str]:
        """The address people open (the public one: Pro Santé Connect sends them back there,
        and a session opened under another host name would not follow), then where we listen."""
        s = self.settings
        host = s.listen_address
        shown = f"[{host}]" if ":" in host else host
        public = s.webmail_url or f"https://{s.hostname}:{self.port}/"
        return [f"Webmail (HTTPS)  {public}  (écoute sur {shown}:{self.port})"]
