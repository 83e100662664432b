"""AUTH on the submission ports (RFC 4954): the SASL mechanisms as aiosmtpd's handler hooks
(``auth_<MECHANISM>``), each reading the client's response and calling one login use case of
``gateway.accept.auth`` in the thread pool.

Mechanisms: PLAIN, LOGIN, EXTERNAL (the TLS client certificate), and OAUTHBEARER (RFC 7628)
and XOAUTH2 when an identity provider is configured. A refused token gets RFC 7628 §3.2.2's
JSON error as a ``334`` challenge; whatever the client answers (``AQ==``, or an empty line for
XOAUTH2), ``535 5.7.8`` follows. AUTH is offered only after TLS (RFC 3207 §4, RFC 4954 §4:
``538 5.7.11`` before STARTTLS).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiosmtpd.smtp import MISSING, AuthResult

from gateway.accept import auth
from gateway.accept.context import Gateway
from gateway.errors import TokenAuthRefused
from gateway.metrics import Metrics
from gateway.smtp import tls
from gateway.smtp.protocol import GatewaySmtp, ip_of
from gateway.smtp.replies import SUCCESS, reply_for

T = TypeVar("T")


class _Runs(Protocol):
    gw: Gateway
    metrics: Metrics

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


class Sasl:
    """The mechanisms, mixed into the submission ports' handler (aiosmtpd finds them there)."""

    async def auth_PLAIN(self: _Runs, server: GatewaySmtp, args: list[str]) -> AuthResult:
        blob = await _initial_response(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:  # RFC 4616 §2: [authzid] NUL authcid NUL passwd
            await server.push("501 5.5.2 Reponse PLAIN mal formee / malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        authzid, login, password = (p.decode("utf-8", "replace") for p in parts)
        return await _login(self, server, auth.password_login, self.gw.db, login, password,
                            authzid, mechanism="PLAIN", **_lockout(self.gw, server))

    async def auth_LOGIN(self: _Runs, server: GatewaySmtp, args: list[str]) -> AuthResult:
        login = await _initial_response(server, args, challenge=b"Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await _login(self, server, auth.password_login, self.gw.db,
                            login.decode("utf-8", "replace"),
                            password.decode("utf-8", "replace"), mechanism="LOGIN",
                            **_lockout(self.gw, server))

    async def auth_EXTERNAL(self: _Runs, server: GatewaySmtp, args: list[str]) -> AuthResult:
        authzid = await _initial_response(server, args)
        if authzid is None:
            return AuthResult(success=False, handled=True)
        cert = tls.peer_certificate(server.ssl_object)
        return await _login(self, server, auth.certificate_login, self.gw.db,
                            self.gw.trust.store(), cert,
                            authzid.decode("utf-8", "replace"), peer=ip_of(server.session))

    async def auth_OAUTHBEARER(self: _Runs, server: GatewaySmtp,
                               args: list[str]) -> AuthResult:
        return await _token(self, server, args, "OAUTHBEARER", auth.parse_oauthbearer)

    async def auth_XOAUTH2(self: _Runs, server: GatewaySmtp, args: list[str]) -> AuthResult:
        return await _token(self, server, args, "XOAUTH2", auth.parse_xoauth2)


def _lockout(gw: Gateway, server: GatewaySmtp) -> dict[str, Any]:
    s = gw.settings
    return {"peer": ip_of(server.session), "max_failures": s.login_max_failures,
            "lock_minutes": s.login_lock_minutes, "web_password": s.imap_smtp_web_password}


async def _token(h: _Runs, server: GatewaySmtp, args: list[str], mechanism: str,
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
    provider = h.gw.provider
    assert provider is not None  # the mechanisms are offered only with a provider
    try:
        who = await h.run(auth.token_login, h.gw.db, provider, bearer,
                          mechanism=mechanism, peer=ip_of(server.session),
                          max_failures=h.gw.settings.login_max_failures,
                          lock_minutes=h.gw.settings.login_lock_minutes)
    except TokenAuthRefused as error:
        h.metrics.refused.labels(reason=error.code).inc()
        # RFC 7628 §3.2.2: the error as a challenge; the client's answer (%x01) ends it.
        answer = await server.challenge_auth(
            auth.token_error(h.gw.settings, mechanism, error.status))
        if answer is not MISSING:  # else aiosmtpd answered the '*' or bad base64 itself
            await server.push(reply_for(error))
        return AuthResult(success=False, handled=True)
    except Exception as error:  # noqa: BLE001 — one mapping, in reply_for
        h.metrics.refused.labels(reason=getattr(error, "code", "internal")).inc()
        await server.push(reply_for(error))
        return AuthResult(success=False, handled=True)
    return AuthResult(success=True, auth_data=who, message=SUCCESS)


async def _login(h: _Runs, server: GatewaySmtp, fn: Callable[..., auth.Authenticated],
                 *args: Any, **kwargs: Any) -> AuthResult:
    try:
        who = await h.run(fn, *args, **kwargs)
    except Exception as error:  # noqa: BLE001 — one mapping, below
        h.metrics.refused.labels(reason=getattr(error, "code", "internal")).inc()
        await server.push(reply_for(error))
        return AuthResult(success=False, handled=True)
    return AuthResult(success=True, auth_data=who, message=SUCCESS)


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
