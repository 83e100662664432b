"""The aiosmtpd handler: one class, parametrised by its channel (submission or relay).

Handlers translate and nothing more (CONVENTIONS.md, 1): parse the command, call one use case
of ``gateway.accept.usecases`` in the thread pool, map the outcome to a reply
(``gateway.smtp.replies.reply_for``). What differs between the ports is data, a ``Channel``:

- Submission (RFC 6409): AUTH required (``gateway.smtp.sasl``), MAIL FROM one of the
  identity's mailboxes, recipients anywhere in the trust space.
- Relay (inter-operator, MSSanté): STARTTLS required with a client certificate
  (``gateway.smtp.tls.relay_context``); the certificate must match the whitelist entry of the
  MAIL FROM domain (``usecases.peer_sender``); recipients must be our own published mailboxes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiosmtpd.smtp import Envelope, Session

from core import audit
from gateway.accept import auth, checks, rates, usecases
from gateway.accept.context import Gateway
from gateway.errors import LocalFailure
from gateway.metrics import Metrics
from gateway.smtp import tls
from gateway.smtp.protocol import GatewaySmtp, ip_of
from gateway.smtp.replies import reply_for
from gateway.smtp.sasl import Sasl
from spool import queue
from spool.events import refusal

log = logging.getLogger("mss.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Channel:
    """What makes a port a submission port or the relay port."""

    name: str  # in the audit trail and the metrics
    local_only: bool  # RCPT: our own mailboxes only (never relay peer to peer)
    # MAIL FROM: check who sends (rate limit included).
    sender: Callable[[Handler, GatewaySmtp, Session, str], Awaitable[None]]
    # DATA: the use case, run in the thread pool; the queue id.
    accept: Callable[[Gateway, GatewaySmtp, Session, usecases.Envelope], str]
    # Who acts, for the audit of a refusal.
    actor: Callable[[GatewaySmtp, Session], str]


def _who(session: Session) -> auth.Authenticated:
    """The AUTH outcome (aiosmtpd's ``auth_required`` guarantees there is one)."""
    data = session.auth_data
    if not isinstance(data, auth.Authenticated):
        raise LocalFailure("Session sans authentification / unauthenticated session")
    return data


async def _submission_sender(h: Handler, server: GatewaySmtp, session: Session,
                             address: str) -> None:
    who = _who(session)
    await h.run(h.rate.check, who.login)
    if not usecases.known_sender(h.gw, who.identity, address):
        await h.run(usecases.sender, h.gw, who.identity, address)


def _submit(gw: Gateway, server: GatewaySmtp, session: Session,
            env: usecases.Envelope) -> str:
    who = _who(session)
    return usecases.submit(gw, who.login, who.identity, env)


def _submitter(server: GatewaySmtp, session: Session) -> str:
    data = session.auth_data
    return data.login if isinstance(data, auth.Authenticated) else ip_of(session)


async def _peer_sender(h: Handler, server: GatewaySmtp, session: Session,
                       address: str) -> None:
    cert = tls.peer_certificate(server.ssl_object)
    server.peer_dn = await h.run(usecases.peer_sender, h.gw, cert, address)
    await h.run(h.rate.check, server.peer_dn)


def _relay(gw: Gateway, server: GatewaySmtp, session: Session, env: usecases.Envelope) -> str:
    return usecases.relay(gw, server.peer_dn, env)


def _peer(server: GatewaySmtp, session: Session) -> str:
    return server.peer_dn or ip_of(session)


SUBMISSION = Channel("submission", False, _submission_sender, _submit, _submitter)
RELAY = Channel("relay", True, _peer_sender, _relay, _peer)


def replies(hook: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """Wrap a handler hook: a refusal is counted, audited and turned into its reply."""
    @functools.wraps(hook)
    async def wrapper(self: Handler, server: GatewaySmtp, session: Session,
                      envelope: Envelope, *args: Any) -> str:
        try:
            return await hook(self, server, session, envelope, *args)
        except Exception as error:  # noqa: BLE001 — mapped to a reply, never shown
            await self.refused(server, session, envelope, hook.__name__, error)
            return reply_for(error)
    return wrapper


class Handler:
    """MAIL, RCPT and DATA of one channel."""

    def __init__(self, gw: Gateway, metrics: Metrics, pool: ThreadPoolExecutor,
                 rate: rates.RateLimit, channel: Channel) -> None:
        self.gw, self.metrics, self.pool, self.rate = gw, metrics, pool, rate
        self.channel = channel

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def handle_exception(self, error: Exception) -> str:
        return reply_for(error)

    @replies
    async def handle_MAIL(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        await self.channel.sender(self, server, session, address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    @replies
    async def handle_RCPT(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        checks.check_count(len(envelope.rcpt_tos), self.gw.settings.max_recipients)
        local_only = self.channel.local_only
        route = usecases.known_route(self.gw, address, local_only=local_only)
        if route is None:
            route = await self.run(usecases.recipient, self.gw, address, local_only=local_only)
        _routes(envelope).append(route)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    @replies
    async def handle_DATA(self, server: GatewaySmtp, session: Session,
                          envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        checks.check_size(len(raw), self.gw.settings.max_message_size)
        env = usecases.Envelope(envelope.mail_from or "", list(_routes(envelope)), raw,
                                session.host_name or "", ip_of(session),
                                tls.describe(server.ssl_object))
        queue_id = await self.run(self.channel.accept, self.gw, server, session, env)
        self.metrics.accepted.labels(channel=self.channel.name).inc()
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def refused(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                      step: str, error: BaseException) -> None:
        code = getattr(error, "code", "internal")
        self.metrics.refused.labels(reason=code).inc()
        try:
            await self.run(self._audit_refusal, server, session, envelope, step, error)
        except Exception:  # noqa: BLE001 — the refusal itself must still be answered
            log.exception("audit d'un refus SMTP impossible")

    def _audit_refusal(self, server: GatewaySmtp, session: Session, envelope: Envelope,
                       step: str, error: BaseException) -> None:
        with queue.writing(self.gw.db) as db_session:
            audit.record(db_session, actor=self.channel.actor(server, session)[:254],
                         action=refusal(self.channel.name), target=step,
                         outcome=getattr(error, "code", "internal"),
                         request={"from": envelope.mail_from or "", "ip": ip_of(session),
                                  "rcpt": len(envelope.rcpt_tos),
                                  "reply": getattr(error, "smtp_code", 451)})


class SubmissionHandler(Sasl, Handler):
    """The submission ports' handler: the channel's hooks plus the SASL mechanisms."""


def _routes(envelope: Envelope) -> list[checks.Route]:
    """The routes granted at RCPT, kept on aiosmtpd's envelope (reset with it on RSET and
    after DATA)."""
    routes: list[checks.Route] = vars(envelope).setdefault("routes", [])
    return routes
