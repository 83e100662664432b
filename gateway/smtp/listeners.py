"""The SMTP listeners: submission (STARTTLS), submissions (implicit TLS) and relay, on one
asyncio loop in a thread of their own, with their TLS contexts kept current.

What each port does is its handler's (``gateway.smtp.handlers``); the protocol object is
``gateway.smtp.protocol.GatewaySmtp``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

from gateway.accept import rates
from gateway.accept.context import Gateway
from gateway.metrics import Metrics
from gateway.smtp import tls
from gateway.smtp.handlers import RELAY, SUBMISSION, Handler, SubmissionHandler
from gateway.smtp.protocol import GatewaySmtp

log = logging.getLogger("mss.gateway")


# The certificate and key each kind of port presents (see gateway.smtp.tls).
_FILES = {"submission": ("server.crt", "server.key"), "relay": ("operator.crt", "operator.key")}


class Listeners:
    """The three listeners on one asyncio loop in a thread of their own."""

    def __init__(self, gw: Gateway, metrics: Metrics, pool: ThreadPoolExecutor, *,
                 reuse_port: bool = False) -> None:
        self.gw, self.metrics, self.pool = gw, metrics, pool
        # Several gateway processes bind the same ports (SO_REUSEPORT: the kernel spreads the
        # connections; only processes of the same user may join, see socket(7)).
        self.reuse_port = reuse_port
        self.rate = rates.RateLimit(gw.db, gw.settings.rate_limit_per_minute)
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.AbstractServer] = []
        self.ports: dict[str, int] = {}
        self._contexts: dict[str, tuple[object, ssl.SSLContext]] = {}
        self._unusable: dict[str, object] = {}  # file versions that failed to load
        self._thread = threading.Thread(target=self.loop.run_forever, name="smtp", daemon=True)

    def start(self) -> None:
        """Bind the three ports (port 0: an ephemeral port, see ``ports``).

        Raises:
            OSError: a port cannot be bound.
        """
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._bind(), self.loop)
        future.result(timeout=30)

    async def _bind(self) -> None:
        s = self.gw.settings
        sub = SubmissionHandler(self.gw, self.metrics, self.pool, self.rate, SUBMISSION)
        relay = Handler(self.gw, self.metrics, self.pool, self.rate, RELAY)
        for name, handler, port, implicit in (
                ("submission", sub, s.submission_port, False),
                ("submissions", sub, s.submissions_port, True),
                ("relay", relay, s.relay_port, False)):
            server = await self.loop.create_server(
                functools.partial(self._smtp, handler, name, implicit), s.listen_address, port,
                ssl=self._implicit_context() if implicit else None,
                reuse_port=self.reuse_port or None)
            self.servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    def _context(self, name: str) -> ssl.SSLContext:
        """The current TLS context of a port, rebuilt when a trust file changed (a peer CA
        added) or its certificate was replaced (``mss cert renew`` / ``install``): new
        connections get it, open ones keep theirs. Files that do not load (a key renamed an
        instant before its certificate, a wrong key) leave the previous context in service
        until they change again."""
        s = self.gw.settings
        kind = "relay" if name == "relay" else "submission"
        version = (self.gw.trust.version(), tls.certificate_stamp(s.pki_dir, _FILES[kind]))
        held = self._contexts.get(kind)
        if held is None or (held[0] != version and self._unusable.get(kind) != version):
            build = tls.relay_context if kind == "relay" else tls.submission_context
            try:
                held = self._contexts[kind] = (version, build(s))
            except OSError as exc:  # ssl.SSLError included
                if held is None:
                    raise
                self._unusable[kind] = version
                log.warning("certificat %s illisible (%s) : le précédent reste en service",
                            _FILES[kind][0], exc)
        return held[1]

    def _implicit_context(self) -> ssl.SSLContext:
        """The submissions port's context. asyncio keeps the one given when the port is bound,
        so each handshake switches to the current one in the SNI callback (OpenSSL calls it
        for every ClientHello, with or without a server name)."""
        context = tls.submission_context(self.gw.settings)

        def switch(ssl_object: ssl.SSLObject, _name: str | None,
                   _context: ssl.SSLContext) -> None:
            ssl_object.context = self._context("submission")

        context.sni_callback = switch
        return context

    def _smtp(self, handler: Handler, name: str, implicit: bool) -> GatewaySmtp:
        s = self.gw.settings
        context = None if implicit else self._context(name)
        return GatewaySmtp(handler, implicit_tls=implicit, hostname=s.hostname, ident="mss",
                           tls_context=context, require_starttls=not implicit,
                           auth_required=name != "relay", offer_auth=name != "relay",
                           tokens=self.gw.provider is not None,
                           auth_require_tls=True,
                           data_size_limit=s.max_message_size or None, decode_data=False,
                           timeout=300)

    def stop(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
                await server.wait_closed()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self.loop.close()
