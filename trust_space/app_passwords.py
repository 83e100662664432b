"""Application passwords: the IMAP/SMTP credentials of a person's devices (issue #14, item 2).

A personal mailbox's web password is only half of a web log-in (the one-time code is the other
half), so it is not an IMAP/SMTP password. Mail clients and practice software get instead an
application password per device ("Logiciel du cabinet", "Thunderbird bureau"): generated here,
shown once, stored hashed, listed and revocable in *Mon compte* and by ``mss account
app-password``, usable only on IMAP and SMTP.

Format: ``<prefix>-<secret>``, 8 + 1 + 26 characters from a 32-letter alphabet without look-alike
characters. The prefix (40 bits, a unique column) is public: it names the password in lists and
audit records and selects its row in one indexed look-up — also from Dovecot's SQL passdb
(``mailstore.sql``), which verifies in C without a process per login. The secret carries 130
bits from ``secrets``; the stored hash is the hex SHA-256 of the whole password. A fast hash is
enough here because nobody chose the secret: there is no dictionary to try, and 2^130 guesses
are out of reach whatever the hash costs (argon2 protects the web password because people pick
guessable ones). Dovecot verifies the same value with its ``{SHA256.HEX}`` scheme.

These functions write to the caller's session, never commit and do not audit: the caller records
the outcome (CONVENTIONS.md, 6).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from trust_space.accounts import (
    _record_failure,
    authenticate_password,
    find_account,
    open_expired_lock,
)
from trust_space.errors import AccountSuspended, AuthenticationFailed, TrustSpaceError
from trust_space.models import Account, AccountKind, AccountState, AppPassword

ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 letters: no l/1, o/0
PREFIX_LENGTH = 8
SECRET_LENGTH = 26  # 26 × 5 = 130 bits
NAME_MAX = 80
MAX_ACTIVE = 20  # per account: a list someone can still read and review


class AppPasswordError(TrustSpaceError):
    """An application password that cannot be created or found (French message)."""

    code = "app_password"

    def __init__(self, message: str, code: str = "app_password") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ProtocolLogin:
    """Who passed an IMAP/SMTP PLAIN/LOGIN, and with which application password (None: the
    account's own password, where the rules allow it)."""

    account: Account
    app_password: AppPassword | None


def hash_app_password(password: str) -> str:
    """The stored form: hex SHA-256 of the whole password (Dovecot's ``{SHA256.HEX}``)."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _clean_name(name: str) -> str:
    """The device name, stripped; raises AppPasswordError when empty, too long or with
    control characters (it is shown in lists and audit records)."""
    text = " ".join(name.split())
    if not text:
        raise AppPasswordError("Donnez un nom à ce mot de passe d'application (l'appareil ou "
                               "le logiciel qui l'utilisera).", "app_password_name")
    if len(text) > NAME_MAX or not text.isprintable():
        raise AppPasswordError(f"Nom invalide : {NAME_MAX} caractères imprimables au plus.",
                               "app_password_name")
    return text


def may_have_app_passwords(account: Account) -> bool:
    """Persons (not operators) and practice software; never mss's own service accounts.
    Operator accounts never log in over IMAP/SMTP with a password (issue #14)."""
    return account.kind in (AccountKind.PROFESSIONAL, AccountKind.APPLICATIVE) and \
        not account.is_operator


def active(session: Session, account: Account) -> list[AppPassword]:
    """The account's application passwords that are not revoked, oldest first."""
    return list(session.scalars(select(AppPassword).where(
        AppPassword.account_id == account.id, AppPassword.revoked_at.is_(None))
        .order_by(AppPassword.created_at, AppPassword.id)))


def create(session: Session, account: Account, name: str, *,
           now: datetime | None = None) -> tuple[AppPassword, str]:
    """A new application password for ``account``: the row and the password, to show once.

    Raises:
        AppPasswordError: an operator's or a service account, an empty/invalid name, a name
            already used by an active password of this account, or ``MAX_ACTIVE`` reached.
    """
    if not may_have_app_passwords(account):
        raise AppPasswordError("Ce compte ne peut pas avoir de mot de passe d'application "
                               "(compte opérateur ou de service).", "app_password_not_allowed")
    clean = _clean_name(name)
    current = active(session, account)
    if any(p.name.casefold() == clean.casefold() for p in current):
        raise AppPasswordError(f"Un mot de passe d'application s'appelle déjà « {clean} ».",
                               "app_password_name_taken")
    if len(current) >= MAX_ACTIVE:
        raise AppPasswordError(f"{MAX_ACTIVE} mots de passe d'application au plus : révoquez "
                               "ceux qui ne servent plus.", "app_password_too_many")
    prefix = _random(PREFIX_LENGTH)
    while session.scalar(select(AppPassword.id).where(AppPassword.prefix == prefix)):
        prefix = _random(PREFIX_LENGTH)  # 40 bits: a collision is rare, never reused
    password = f"{prefix}-{_random(SECRET_LENGTH)}"
    row = AppPassword(account_id=account.id, name=clean, prefix=prefix,
                      secret_hash=hash_app_password(password), created_at=now or utcnow())
    session.add(row)
    session.flush()
    return row, password


def find(session: Session, account: Account, prefix_or_name: str) -> AppPassword:
    """The active application password of ``account`` with this prefix or this name.

    Raises:
        AppPasswordError: none matches (code ``app_password_unknown``).
    """
    wanted = " ".join(prefix_or_name.split())
    for row in active(session, account):
        if row.prefix == wanted.lower() or row.name.casefold() == wanted.casefold():
            return row
    raise AppPasswordError(f"Aucun mot de passe d'application actif « {wanted} » pour "
                           f"{account.login}.", "app_password_unknown")


def revoke(session: Session, account: Account, prefix_or_name: str, *,
           now: datetime | None = None) -> AppPassword:
    """Revoke one application password: refused from the next login on (Dovecot and the
    gateway read the row at every login; nothing is cached).

    Raises:
        AppPasswordError: see ``find``.
    """
    row = find(session, account, prefix_or_name)
    row.revoked_at = now or utcnow()
    session.flush()
    return row


def match(session: Session, account: Account, password: str) -> AppPassword | None:
    """The active application password of ``account`` that ``password`` is, or None.
    One indexed look-up by prefix, then a constant-time comparison of the hashes."""
    if len(password) != PREFIX_LENGTH + 1 + SECRET_LENGTH or password[PREFIX_LENGTH] != "-":
        return None
    row = session.scalar(select(AppPassword).where(
        AppPassword.account_id == account.id, AppPassword.revoked_at.is_(None),
        AppPassword.prefix == password[:PREFIX_LENGTH]))
    if row is None or not hmac.compare_digest(row.secret_hash, hash_app_password(password)):
        return None
    return row


def own_password_allowed(account: Account, *, web_password: bool) -> bool:
    """Whether the account's own password is an IMAP/SMTP credential: for practice software
    and mss's service accounts (they have no web log-in), and for a person only when the
    operator turned ``imap_smtp_web_password`` on — never for an operator account.
    Keep in step with ``mailstore.sql.password_query``."""
    if account.is_operator:
        return False
    if account.kind in (AccountKind.APPLICATIVE, AccountKind.SERVICE):
        return True
    return web_password


def authenticate_protocol(session: Session, login: str, password: str, *, web_password: bool,
                          now: datetime | None = None, max_failures: int = 5,
                          lock_minutes: int = 15) -> ProtocolLogin:
    """The IMAP/SMTP PLAIN/LOGIN rule: an application password, or the account's own password
    where ``own_password_allowed``. Every refusal of an existing account counts towards its
    lock-out, in the same ``failed_attempts`` as the webmail's password failures; a success
    resets it and records ``last_used_at``.

    Raises:
        AuthenticationFailed: unknown login, wrong password, or a password not accepted here
            (the same message for all: no oracle telling a right web password from a wrong one).
        AccountLocked: the account is inside its lock window.
        AccountSuspended: the right application password of a suspended account.
    """
    now = now or utcnow()
    account = find_account(session, login, for_update=True)  # failures counted in order
    if account is None:
        if web_password:  # same time as for a known login (argon2 on a dummy hash)
            authenticate_password(session, login, password, now=now,
                                  max_failures=max_failures, lock_minutes=lock_minutes)
        raise AuthenticationFailed()
    open_expired_lock(account, now)
    row = match(session, account, password) if may_have_app_passwords(account) else None
    if row is not None:
        if account.state is not AccountState.ACTIVE:
            raise AccountSuspended()
        account.failed_attempts = 0
        row.last_used_at = now
        session.flush()
        return ProtocolLogin(account, row)
    if own_password_allowed(account, web_password=web_password):
        return ProtocolLogin(authenticate_password(
            session, login, password, now=now, max_failures=max_failures,
            lock_minutes=lock_minutes), None)
    _record_failure(account, now, max_failures, lock_minutes)
    session.flush()
    raise AuthenticationFailed()
