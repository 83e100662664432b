"""Dovecot's authentication policy, answered by mss: one lock-out per account for IMAP, SMTP
and the webmail, and every IMAP log-in in the audit trail (issue #14 items 2 and 5, ECO.4.1.2).

Dovecot 2.3.19 (``src/auth/auth-policy.c``) POSTs a JSON object of the attributes listed in
``auth_policy_request_attributes`` (``REQUEST_ATTRIBUTES`` below, plus ``"tls"``) to
``auth_policy_server_url?command=allow`` before checking a password (and again after a
successful check), and, with ``auth_policy_report_after_auth``, to ``?command=report`` once the
log-in is decided, with ``"success"`` and ``"policy_reject"`` added. ``allow`` is answered
``{"status": 0|-1, "msg": …}``: below 0 refuses the log-in whatever the password, ``msg``
becomes the client's reason. ``report`` needs no answer. The password is never sent, only a
hash of it salted with ``auth_policy_hash_nonce``; mss ignores it.

Rules:

- ``allow`` refuses a password log-in without TLS (Dovecot counts a connection from the host's
  own address as secured, see ``mailstore.sql``), and any log-in to an account inside its lock
  window (``Account.locked_until``), even with the right password. EXTERNAL (a certificate) is
  never refused here: locks answer password guessing, which a certificate is not.
- ``report`` of a failed PLAIN/LOGIN, OAUTHBEARER or XOAUTH2 for an existing account counts one
  failure (``trust_space.accounts.record_protocol_failure``: same counter and thresholds as the
  webmail and the gateway, ``login_max_failures`` / ``login_lock_minutes``). Not counted: a
  refusal by this policy (the account was already locked, or no TLS), the webmail's
  master-user log-ins (``user*webmail``, ``mailstore.credentials``), EXTERNAL, and a token
  attempt the provider did not answer (``mailstore.oauth`` remembers what it answered for
  that client address and port, and why: the audit says ``token_invalid``, ``no_account``,
  ``authzid_not_allowed`` — a valid token for another mailbox — …). A success does **not** reset the
  counter: a mail client polling with a good application password must not wipe out guesses
  made on the web password meanwhile; a complete webmail log-in or the lock's expiry does.
- every decided log-in is audited as ``<protocol>.login`` (actor: the login given; outcome
  ``ok``, ``bad_password``, ``bad_token``, ``unknown_login``, ``locked``, ``refused``,
  ``unavailable``; mechanism and client IP; for a token, the reason, the national id and the
  client id when known, never the token), except the webmail's own successful master
  log-ins, which the webmail audits itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core import audit
from core.settings import Settings
from mailstore.credentials import MASTER_USER
from trust_space.accounts import find_account, record_protocol_failure

if TYPE_CHECKING:
    from mailstore.oauth import TokenOutcome

# %{requested_username}: the login typed (the target user of a master log-in); %{user}: the
# master user's name during a master log-in; %m: the SASL mechanism; %{rip}, %{rport}: client
# IP and port (the port finds mailstore.oauth's answer for a token attempt).
REQUEST_ATTRIBUTES = ("login=%{requested_username} user=%{user} master=%{master_user} "
                      "mech=%m remote=%{rip} rport=%{rport} protocol=%s session=%{session}")
PASSWORD_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
TOKEN_MECHANISMS = frozenset({"OAUTHBEARER", "XOAUTH2"})  # mailstore.oauth
# No reason for a locked account: the client gets Dovecot's plain [AUTHENTICATIONFAILED], the
# same as for a wrong password, so a guesser learns nothing (the audit trail says "locked").
LOCKED_MESSAGE = ""
TLS_MESSAGE = "TLS requis avant l'authentification / TLS required before authentication"


@dataclass(frozen=True)
class LoginAttempt:
    """One request of Dovecot's policy client, parsed."""

    login: str
    user: str
    master: str
    mechanism: str
    remote: str
    protocol: str
    tls: bool
    success: bool = False
    policy_reject: bool = False
    session: str = ""  # Dovecot's session id, the same in the IMAP process's events
    port: str = ""  # the client's port

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoginAttempt:
        """Raises: ValueError: not an object of Dovecot's shape."""
        if not isinstance(data, Mapping):
            raise ValueError("policy request is not a JSON object")

        def text(key: str) -> str:
            value = data.get(key, "")
            return value.strip() if isinstance(value, str) else ""

        login = text("login").lower()
        if not login:
            raise ValueError("policy request without login")
        return cls(login, text("user").lower(), text("master").lower(), text("mech").upper(),
                   text("remote"), text("protocol") or "imap", data.get("tls") is True,
                   data.get("success") is True, data.get("policy_reject") is True,
                   text("session"), text("rport"))

    @property
    def is_master(self) -> bool:
        """A master-user log-in (``<user>*webmail``): Dovecot names the master in ``user``
        before the check and in ``master`` after it."""
        return bool(self.master) or self.user == MASTER_USER

    @property
    def master_name(self) -> str:
        return (self.master or self.user) if self.is_master else ""

    @property
    def by_password(self) -> bool:
        return self.mechanism in PASSWORD_MECHANISMS

    @property
    def by_token(self) -> bool:
        return self.mechanism in TOKEN_MECHANISMS


def allow(session: Session, attempt: LoginAttempt, now: datetime) -> tuple[int, str]:
    """Dovecot's ``command=allow``: ``(0, "")`` to go on, ``(-1, reason)`` to refuse."""
    if attempt.mechanism == "EXTERNAL":
        return 0, ""
    if not attempt.tls:
        return -1, TLS_MESSAGE
    account = find_account(session, attempt.login)
    if account is not None and account.locked_until is not None and account.locked_until > now:
        return -1, LOCKED_MESSAGE
    return 0, ""


def report(session: Session, attempt: LoginAttempt, now: datetime, settings: Settings,
           token: TokenOutcome | None = None) -> None:
    """Dovecot's ``command=report``: count a failed password or token and audit the outcome.
    ``token``: what ``mailstore.oauth`` answered for this attempt, if it was asked."""
    details: dict[str, Any] = {"mechanism": attempt.mechanism, "remote": attempt.remote}
    if token is not None:
        details.update({k: v for k, v in (("national_id", token.national_id),
                                          ("client", token.client_id)) if v})
    if attempt.success:
        if not attempt.is_master:
            _audit(session, attempt, "ok", details)
        return
    if attempt.policy_reject:
        account = find_account(session, attempt.login)
        locked = account is not None and account.locked_until is not None \
            and account.locked_until > now
        _audit(session, attempt, "locked" if locked else "refused", details)
        return
    if attempt.is_master:
        details["master"] = attempt.master_name
        _audit(session, attempt, "master_failed", details)
        return
    if attempt.by_token:
        details["reason"] = _token_reason(attempt, token)
        if details["reason"] == "token_unavailable":  # the provider's fault, not a guess
            _audit(session, attempt, "unavailable", details)
            return
    elif not attempt.by_password:
        _audit(session, attempt, "failed", details)
        return
    account = record_protocol_failure(session, attempt.login, now=now,
                                      max_failures=settings.login_max_failures,
                                      lock_minutes=settings.login_lock_minutes)
    if account is None:
        _audit(session, attempt, "unknown_login", details)
        return
    details["failed_attempts"] = account.failed_attempts
    details["locked"] = account.locked_until is not None and account.locked_until > now
    _audit(session, attempt, "bad_token" if attempt.by_token else "bad_password", details)


def _token_reason(attempt: LoginAttempt, token: TokenOutcome | None) -> str:
    """Why a token attempt failed, in the gateway's words (``gateway.accept.auth.token_login``)."""
    if token is None:
        return "malformed"  # Dovecot refused it before asking mss (no token, bad syntax)
    if token.reason == "ok":  # a good token for someone else's mailbox
        return "authzid_not_allowed" if token.login != attempt.login else "refused"
    if token.reason in ("invalid", "audience", "acr", "identity", "unavailable"):
        return f"token_{token.reason}"
    return token.reason


def _audit(session: Session, attempt: LoginAttempt, outcome: str,
           details: dict[str, Any]) -> None:
    audit.record(session, actor=attempt.login, action=f"{attempt.protocol}.login",
                 target=attempt.login, outcome=outcome, request=details)
