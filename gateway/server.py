"""The SMTP listeners (aiosmtpd): submission (STARTTLS), submissions (implicit TLS), relay.

Handlers translate and nothing more (CONVENTIONS.md, 1): parse the command, call one use case
of ``gateway.accept`` in the thread pool, map the outcome to a reply. Errors become replies in
exactly one place, ``reply_for`` (CONVENTIONS.md, 4): a ``GatewayError`` knows its reply;
anything else is logged here and the client gets ``451 4.3.0`` — never a traceback.

- Submission (RFC 6409): AUTH required and offered only after TLS (RFC 3207 §4, RFC 4954 §4:
  ``538 5.7.11`` before STARTTLS); mechanisms PLAIN, LOGIN, EXTERNAL, and OAUTHBEARER
  (RFC 7628) and XOAUTH2 when an identity provider is configured (``gateway.auth``). A refused
  token gets RFC 7628 §3.2.2's JSON error as a ``334`` challenge; whatever the client answers
  (``AQ==``, or an empty line for XOAUTH2), ``535 5.7.8`` follows. An AUTH line may be 12288
  octets long (RFC 4954 §4: a PSC access token is a JWT of 1-2 kB); text lines stay at 1000.
- Relay (inter-operator, MSSanté): STARTTLS required with a client certificate
  (``gateway.tls.relay_context``); the certificate must match the whitelist entry of the MAIL
  FROM domain (``accept.peer_sender``); recipients must be our own published mailboxes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import logging
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    Session,
    TLSSetupException,
    syntax,
)

from core import audit
from gateway import accept, auth, pipeline, tls
from gateway.accept import Gateway
from gateway.data import Outcome, read_body
from gateway.errors import GatewayError, LocalFailure, TokenAuthRefused
from gateway.metrics import Metrics
from spool import queue
from spool.events import refusal

log = logging.getLogger("mss.gateway")
T = TypeVar("T")


class _QuietLegacy(logging.Filter):
    """aiosmtpd 1.4 warns on every AUTH that it sets its deprecated ``login_data`` itself,
    and on every relay connection that the relay requires a client certificate (it must:
    mutual TLS between operators)."""

    _EXPECTED = ("login_data is deprecated", "tls_context.verify_mode not in")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in self._EXPECTED)


logging.getLogger("mail.log").addFilter(_QuietLegacy())

# <dot-atom@dot-atom> followed by the end or by whitespace (then ESMTP parameters).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
                          r"(?:[ \t]+|\Z)")
_TOO_MUCH = "552 5.3.4 Message trop volumineux / message size exceeds fixed maximum"
_TOO_LONG = "500 5.5.0 Ligne trop longue / line too long (RFC 5321 4.5.3.1.6)"
TEXT_LINE_LIMIT = 1001  # RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF (aiosmtpd's default)
AUTH_LINE_LIMIT = 12288  # RFC 4954 §4: the AUTH command and the client's responses
TOKEN_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")

# aiosmtpd writes a few replies itself, without RFC 3463 enhanced codes: give them one.
_REWRITE = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message trop volumineux / message size exceeds fixed maximum",
    "552 Error: Too much mail data":
        "552 5.3.4 Message trop volumineux / message size exceeds fixed maximum",
    "530 Must issue a STARTTLS command first":
        "530 5.7.0 STARTTLS d'abord / must issue a STARTTLS command first",
    "535 5.7.8 Authentication credentials invalid":
        "535 5.7.8 Identifiants refuses / authentication credentials invalid",
}


def reply_for(error: BaseException) -> str:
    """The one place where an error becomes an SMTP reply."""
    if isinstance(error, GatewayError):
        return error.smtp_reply()
    log.error("erreur interne pendant une session SMTP (%s)", type(error).__name__,
              exc_info=error)
    return LocalFailure("Erreur temporaire du relais, réessayez / temporary relay error, "
                        "try again later").smtp_reply()


class GatewaySmtp(SMTP):
    """aiosmtpd's SMTP with enhanced codes on its own replies; ``implicit_tls`` for the
    submissions port, where the whole connection is TLS (RFC 8314) so AUTH is allowed;
    ``tokens``: offer OAUTHBEARER and XOAUTH2 (an identity provider is configured)."""

    # The stream's line limit, for AUTH's long lines; every other command keeps aiosmtpd's
    # 512 (``command_size_limits``) and text lines 1000 (``TEXT_LINE_LIMIT``, in DATA).
    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(self, handler: Any, *, implicit_tls: bool = False, offer_auth: bool = True,
                 tokens: bool = False, **kwargs: Any) -> None:
        if not offer_auth:  # no SASL mechanism at all, not even aiosmtpd's built-in ones
            kwargs["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]
        elif not tokens:
            kwargs["auth_exclude_mechanism"] = list(TOKEN_MECHANISMS)
        super().__init__(handler, **kwargs)
        # Per connection (aiosmtpd's is one dict shared by the class): AUTH may be long.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": AUTH_LINE_LIMIT})
        self._offer_auth = offer_auth
        if implicit_tls:
            self._auth_require_tls = False

    async def push(self, status: bytes | str) -> None:
        if not self._offer_auth and isinstance(status, str) and status.startswith("250-AUTH"):
            # The relay port authenticates peers by mutual TLS only (ECO.1.1.3): advertising
            # AUTH (RFC 4954 §3) there would invite password guessing that can never succeed.
            return
        if isinstance(status, str):
            await super().push(_REWRITE.get(status, status))
        else:
            await super().push(status)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The common form, <dot-atom@domain> then nothing or parameters, read directly: the
        # stdlib's RFC 5322 parser costs ~0.1 ms per address. Anything else goes to it.
        simple = _SIMPLE_PATH.match(arg)
        if simple and not arg.startswith("(", simple.end()):
            address = simple.group(1)
            if not (self.local_part_limit
                    and len(address.rpartition("@")[0]) > self.local_part_limit):
                return address, arg[simple.end():]
        # The stdlib's address parser raises more than HeaderParseError on some inputs
        # (IndexError on "a@", AttributeError on ".@["): an address it cannot read is a
        # syntax error for the client, not a relay failure.
        try:
            return super()._getaddr(arg)
        except Exception:  # noqa: BLE001 — whatever the parser's own bug
            return None, None

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's, with the body read in blocks (``gateway.data``) rather than line by
        # line, and without its debug log of every line (message content, CONVENTIONS.md 12).
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 RCPT d'abord / need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntaxe : DATA / syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            body = await read_body(self._reader, size_limit=self.data_size_limit,
                                   line_limit=TEXT_LINE_LIMIT)
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:  # the client left mid-body: nothing to answer
            self._writer.close()
            return
        if body.outcome is not Outcome.OK:
            self._set_post_data_state()
            await self.push(_TOO_LONG if body.outcome is Outcome.TOO_LONG else _TOO_MUCH)
            return
        self.envelope.content = self.envelope.original_content = body.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 §4.2: no second TLS negotiation on a session that already has one
        # (after STARTTLS, or on the implicit-TLS submissions port).
        if self.ssl_object is not None:
            await self.push("503 5.5.1 Session deja en TLS / TLS already active")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            # A client that cannot or will not negotiate TLS (garbage, TLS 1.0, a scanner) is
            # not an internal error: one line, no traceback; then the connection is closed,
            # as aiosmtpd does for this exception (no reply can be sent on a broken TLS layer).
            log.warning("négociation TLS (STARTTLS) échouée avec %s : %s",
                        _ip(self.session), _tls_reason(error))
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(error)


def replies(hook: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """Wrap a handler hook: a refusal is counted, audited and turned into its reply."""
    @functools.wraps(hook)
    async def wrapper(self: BaseHandler, server: GatewaySmtp, session: Session,
                      envelope: Envelope, *args: Any) -> str:
        try:
            return await hook(self, server, session, envelope, *args)
        except Exception as error:  # noqa: BLE001 — mapped to a reply, never shown
            await self.refused(session, envelope, hook.__name__, error)
            return reply_for(error)
    return wrapper


class BaseHandler:
    """What both kinds of listener share."""

    channel = "submission"

    def __init__(self, gw: Gateway, metrics: Metrics, pool: ThreadPoolExecutor,
                 rate: pipeline.RateLimit) -> None:
        self.gw, self.metrics, self.pool, self.rate = gw, metrics, pool, rate

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def handle_exception(self, error: Exception) -> str:
        return reply_for(error)

    async def refused(self, session: Session, envelope: Envelope, step: str,
                      error: BaseException) -> None:
        code = getattr(error, "code", "internal")
        self.metrics.refused.labels(reason=code).inc()
        try:
            await self.run(self._audit_refusal, session, envelope, step, error)
        except Exception:  # noqa: BLE001 — the refusal itself must still be answered
            log.exception("audit d'un refus SMTP impossible")

    def _audit_refusal(self, session: Session, envelope: Envelope, step: str,
                       error: BaseException) -> None:
        with queue.writing(self.gw.db) as db_session:
            audit.record(db_session, actor=self.actor(session)[:254],
                         action=refusal(self.channel), target=step,
                         outcome=getattr(error, "code", "internal"),
                         request={"from": envelope.mail_from or "", "ip": _ip(session),
                                  "rcpt": len(envelope.rcpt_tos),
                                  "reply": getattr(error, "smtp_code", 451)})

    def actor(self, session: Session) -> str:
        data = session.auth_data
        return data.login if isinstance(data, auth.Authenticated) else _ip(session)

    def envelope_of(self, server: GatewaySmtp, session: Session,
                    envelope: Envelope) -> accept.Envelope:
        raw = envelope.original_content or b""
        return accept.Envelope(envelope.mail_from or "", list(getattr(envelope, "routes", [])),
                               raw, session.host_name or "", _ip(session),
                               tls.describe(server.ssl_object))

    @staticmethod
    def add_route(envelope: Envelope, address: str, route: pipeline.Route) -> None:
        routes = getattr(envelope, "routes", None)
        if routes is None:
            routes = envelope.routes = []  # type: ignore[attr-defined]
        routes.append(route)
        envelope.rcpt_tos.append(address)


def _who(session: Session) -> auth.Authenticated:
    """The AUTH outcome (aiosmtpd's ``auth_required`` guarantees there is one)."""
    data = session.auth_data
    if not isinstance(data, auth.Authenticated):
        raise LocalFailure("Session sans authentification / unauthenticated session")
    return data


def _tls_reason(error: BaseException) -> str:
    """Why a TLS handshake failed, in OpenSSL's words (``WRONG_VERSION_NUMBER``…)."""
    cause = error.__cause__ or error
    return str(getattr(cause, "reason", None) or type(cause).__name__)


def _ip(session: Session | None) -> str:
    if session is None:
        return ""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class SubmissionHandler(BaseHandler):
    """Submission and submissions ports."""

    @replies
    async def handle_MAIL(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        who = _who(session)
        self.rate.check(who.login)
        if not accept.known_sender(self.gw, who.identity, address):
            await self.run(accept.sender, self.gw, who.identity, address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    @replies
    async def handle_RCPT(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        pipeline.check_count(len(envelope.rcpt_tos), self.gw.settings.max_recipients)
        route = accept.known_route(self.gw, address)
        if route is None:
            route = await self.run(accept.recipient, self.gw, address)
        self.add_route(envelope, address, route)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    @replies
    async def handle_DATA(self, server: GatewaySmtp, session: Session,
                          envelope: Envelope) -> str:
        env = self.envelope_of(server, session, envelope)
        pipeline.check_size(len(env.raw), self.gw.settings.max_message_size)
        who = _who(session)
        queue_id = await self.run(accept.submit, self.gw, who.login, who.identity, env)
        self.metrics.accepted.labels(channel=self.channel).inc()
        return f"250 2.0.0 Ok: queued as {queue_id}"

    # ------------------------------------------------------------------ AUTH (RFC 4954)
    async def auth_PLAIN(self, server: GatewaySmtp, args: list[str]) -> AuthResult:
        blob = await _initial_response(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:  # RFC 4616 §2: [authzid] NUL authcid NUL passwd
            await server.push("501 5.5.2 Reponse PLAIN mal formee / malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
        return await self._login(server, auth.password_login, self.gw.db, login, password,
                                 authzid, mechanism="PLAIN", **self._lockout(server))

    async def auth_LOGIN(self, server: GatewaySmtp, args: list[str]) -> AuthResult:
        login = await _initial_response(server, args, challenge=b"Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._login(server, auth.password_login, self.gw.db,
                                 login.decode("utf-8", "replace"),
                                 password.decode("utf-8", "replace"), mechanism="LOGIN",
                                 **self._lockout(server))

    def _lockout(self, server: GatewaySmtp) -> dict[str, Any]:
        s = self.gw.settings
        return {"peer": _ip(server.session), "max_failures": s.login_max_failures,
                "lock_minutes": s.login_lock_minutes,
                "web_password": s.imap_smtp_web_password}

    async def auth_EXTERNAL(self, server: GatewaySmtp, args: list[str]) -> AuthResult:
        authzid = await _initial_response(server, args)
        if authzid is None:
            return AuthResult(success=False, handled=True)
        cert = tls.peer_certificate(server.ssl_object)
        return await self._login(server, auth.certificate_login, self.gw.db,
                                 self.gw.trust.store(), cert,
                                 authzid.decode("utf-8", "replace"), peer=_ip(server.session))

    async def auth_OAUTHBEARER(self, server: GatewaySmtp, args: list[str]) -> AuthResult:
        return await self._token(server, args, "OAUTHBEARER", auth.parse_oauthbearer)

    async def auth_XOAUTH2(self, server: GatewaySmtp, args: list[str]) -> AuthResult:
        return await self._token(server, args, "XOAUTH2", auth.parse_xoauth2)

    async def _token(self, server: GatewaySmtp, args: list[str], mechanism: str,
                     parse: Callable[[bytes], auth.Bearer]) -> AuthResult:
        blob = await _initial_response(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        try:
            bearer = parse(blob)
        except ValueError:  # UnicodeDecodeError included
            await server.push(f"501 5.5.2 Reponse {mechanism} mal formee / malformed "
                              f"{mechanism} response")
            return AuthResult(success=False, handled=True)
        provider = self.gw.provider
        assert provider is not None  # the mechanisms are offered only with a provider
        try:
            who = await self.run(auth.token_login, self.gw.db, provider, bearer,
                                 mechanism=mechanism, peer=_ip(server.session),
                                 max_failures=self.gw.settings.login_max_failures,
                                 lock_minutes=self.gw.settings.login_lock_minutes)
        except TokenAuthRefused as error:
            self.metrics.refused.labels(reason=error.code).inc()
            # RFC 7628 §3.2.2: the error as a challenge; the client's answer (%x01) ends it.
            answer = await server.challenge_auth(
                auth.token_error(self.gw.settings, mechanism, error.status))
            if answer is not MISSING:  # else aiosmtpd answered the '*' or bad base64 itself
                await server.push(reply_for(error))
            return AuthResult(success=False, handled=True)
        except Exception as error:  # noqa: BLE001 — one mapping, in reply_for
            self.metrics.refused.labels(reason=getattr(error, "code", "internal")).inc()
            await server.push(reply_for(error))
            return AuthResult(success=False, handled=True)
        return AuthResult(success=True, auth_data=who,
                          message="235 2.7.0 Authentification reussie / authentication "
                                  "successful")

    async def _login(self, server: GatewaySmtp, fn: Callable[..., auth.Authenticated],
                     *args: Any, **kwargs: Any) -> AuthResult:
        try:
            who = await self.run(fn, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 — one mapping, below
            self.metrics.refused.labels(reason=getattr(error, "code", "internal")).inc()
            await server.push(reply_for(error))
            return AuthResult(success=False, handled=True)
        return AuthResult(success=True, auth_data=who,
                          message="235 2.7.0 Authentification reussie / authentication "
                                  "successful")


async def _initial_response(server: GatewaySmtp, args: list[str],
                            challenge: bytes = b"") -> bytes | None:
    """The client's initial response (RFC 4954 §4: ``=`` is an empty one) or the answer to an
    empty challenge; None once an error reply was sent."""
    if len(args) > 1:
        if args[1] == "=":
            return b""
        try:
            return base64.b64decode(args[1], validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Base64 invalide / cannot decode base64")
            return None
    answer = await server.challenge_auth(challenge)
    return answer if isinstance(answer, bytes) else None


class RelayHandler(BaseHandler):
    """The inter-operator port."""

    channel = "relay"

    def actor(self, session: Session) -> str:
        return str(getattr(session, "peer_dn", "")) or _ip(session)

    @replies
    async def handle_MAIL(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        cert = tls.peer_certificate(server.ssl_object)
        dn = await self.run(accept.peer_sender, self.gw, cert, address)
        session.peer_dn = dn  # type: ignore[attr-defined]
        self.rate.check(dn)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    @replies
    async def handle_RCPT(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        pipeline.check_count(len(envelope.rcpt_tos), self.gw.settings.max_recipients)
        route = accept.known_route(self.gw, address, local_only=True)
        if route is None:
            route = await self.run(accept.recipient, self.gw, address, local_only=True)
        self.add_route(envelope, address, route)
        return "250 2.1.5 Ok"

    @replies
    async def handle_DATA(self, server: GatewaySmtp, session: Session,
                          envelope: Envelope) -> str:
        env = self.envelope_of(server, session, envelope)
        pipeline.check_size(len(env.raw), self.gw.settings.max_message_size)
        queue_id = await self.run(accept.relay, self.gw, session.peer_dn,  # type: ignore[attr-defined]
                                  env)
        self.metrics.accepted.labels(channel=self.channel).inc()
        return f"250 2.0.0 Ok: queued as {queue_id}"


# The certificate and key each kind of port presents (see gateway.tls).
_FILES = {"submission": ("server.crt", "server.key"), "relay": ("operator.crt", "operator.key")}


class Listeners:
    """The three listeners on one asyncio loop in a thread of their own."""

    def __init__(self, gw: Gateway, metrics: Metrics, pool: ThreadPoolExecutor) -> None:
        self.gw, self.metrics, self.pool = gw, metrics, pool
        self.rate = pipeline.RateLimit(gw.settings.rate_limit_per_minute)
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
        sub = SubmissionHandler(self.gw, self.metrics, self.pool, self.rate)
        relay = RelayHandler(self.gw, self.metrics, self.pool, self.rate)
        for name, handler, port, implicit in (
                ("submission", sub, s.submission_port, False),
                ("submissions", sub, s.submissions_port, True),
                ("relay", relay, s.relay_port, False)):
            server = await self.loop.create_server(
                functools.partial(self._smtp, handler, name, implicit), s.listen_address, port,
                ssl=self._implicit_context() if implicit else None)
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

        context.sni_callback = switch  # type: ignore[assignment]
        return context

    def _smtp(self, handler: BaseHandler, name: str, implicit: bool) -> GatewaySmtp:
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
