"""Accounts: password hashing, strength rules, password authentication with lock-out.

Hashes are argon2id PHC strings with ``parallelism=1``: Dovecot verifies the same hashes through
libsodium, which only supports p=1 (the Dovecot scheme is ``{ARGON2ID}`` + this string).
These functions write to the caller's session but never commit, and do not audit: the caller
records the outcome (CONVENTIONS.md, 6).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from trust_space.errors import (
    AccountLocked,
    AccountSuspended,
    AuthenticationFailed,
    TrustSpaceError,
    UnknownProfessional,
    WeakPassword,
)
from trust_space.holdings import NOT_CLOSED, mailboxes_of
from trust_space.models import (
    Account,
    AccountKind,
    AccountState,
    Mailbox,
    MailboxKind,
    MailboxState,
    OtpChannel,
    Professional,
)
from trust_space.naming import parse_national_id

# p=1 is required by Dovecot/libsodium; t=3, m=64 MiB per RFC 9106 §4 second recommendation.
PRODUCTION_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)
# The hasher in use. The test suite puts cheaper parameters in its place (tests/conftest.py:
# a hash costs ~0.2 s of CPU, thousands are made), and tests these ones on their own, here
# and through Dovecot.
HASHER = PRODUCTION_HASHER
MIN_LENGTH = 8

_dummy: tuple[PasswordHasher, str] | None = None


def hash_password(password: str) -> str:
    """An argon2id PHC string for ``password``."""
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False on mismatch or an unreadable hash."""
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than ``HASHER``'s."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def check_password_strength(password: str) -> list[str]:
    """The French list of what a new password lacks; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"au moins {MIN_LENGTH} caractères")
    if not any(c.islower() for c in password):
        problems.append("au moins une lettre minuscule")
    if not any(c.isupper() for c in password):
        problems.append("au moins une lettre majuscule")
    if not any(c.isdigit() for c in password):
        problems.append("au moins un chiffre")
    return problems


def _burn_time(password: str) -> None:
    """Verify against a fixed hash so an unknown login costs as long as a wrong password."""
    global _dummy
    if _dummy is None or _dummy[0] is not HASHER:
        _dummy = (HASHER, HASHER.hash("mss-dummy-password"))
    verify_password(_dummy[1], password)


def find_account(session: Session, identifier: str, *,
                 for_update: bool = False) -> Account | None:
    """The account for a login (usually the mailbox address, case-insensitive) or for a CPS
    national identifier ("8" + RPPS, "0" + ADELI). ``for_update`` locks the row (PostgreSQL;
    SQLite writers are serialised by BEGIN IMMEDIATE)."""
    parsed = parse_national_id(identifier)
    if parsed is not None:
        column = Professional.rpps if parsed[0] == "rpps" else Professional.adeli
        query = (select(Account).join(Professional, Account.professional_id == Professional.id)
                 .where(column == parsed[1]))
    else:
        query = select(Account).where(Account.login == identifier.strip().lower())
    if for_update:
        query = query.with_for_update(of=Account)
    return session.execute(query).scalar_one_or_none()


def card_holder(session: Session, national_id: str) -> Account | None:
    """The account a proven national id ("8" + RPPS, "0" + ADELI) opens: the professional's own
    account, when it is active. A CPS card's certificate (SASL EXTERNAL) and a Pro Santé Connect
    access token (OAUTHBEARER, XOAUTH2; its ``SubjectNameID``) prove one, on SMTP and IMAP alike.
    None: not a national id, nobody, not a professional's account, or suspended. Which mailbox
    it may then act for is ``trust_space.policy.may_authorise``'s. (Dovecot's EXTERNAL says the
    same in SQL: ``mailstore.sql.external_query``.)"""
    if parse_national_id(national_id.strip()) is None:
        return None
    account = find_account(session, national_id)
    if account is None or account.kind is not AccountKind.PROFESSIONAL \
            or account.state is not AccountState.ACTIVE:
        return None
    return account


def find_professional(session: Session, identifier: str) -> tuple[Professional, str]:
    """The professional named by an RPPS (11 digits), an ADELI (9 digits), a national id
    ("8" + RPPS, "0" + ADELI), a personal mailbox address or an account login, with the address
    of their personal local mailbox (published first, never a closed one; "" when none).

    Raises:
        UnknownProfessional: nobody matches.
    """
    text = identifier.strip()
    parsed = parse_national_id(text) or (
        ("rpps", text) if len(text) == 11 and text.isascii() and text.isdigit() else
        ("adeli", text) if len(text) == 9 and text.isascii() and text.isdigit() else None)
    professional: Professional | None = None
    if parsed is not None:
        column = Professional.rpps if parsed[0] == "rpps" else Professional.adeli
        professional = session.execute(select(Professional).where(column == parsed[1])
                                       ).scalar_one_or_none()
    else:
        mailbox = session.execute(select(Mailbox).where(Mailbox.address == text.lower())
                                  ).scalar_one_or_none()
        account = find_account(session, text)
        professional = (mailbox.professional if mailbox is not None else None) or (
            account.professional if account is not None else None)
    if professional is None:
        raise UnknownProfessional(f"professionnel inconnu : « {identifier} »")
    return professional, _personal_address(session, professional)


def _personal_address(session: Session, professional: Professional) -> str:
    boxes = sorted(mailboxes_of(session, professional.id, kind=MailboxKind.PERSONAL,
                                states=NOT_CLOSED),
                   key=lambda m: (m.state is not MailboxState.PUBLISHED, m.mailbox_id))
    return boxes[0].address if boxes else ""


def _record_failure(account: Account, now: datetime, max_failures: int,
                    lock_minutes: int) -> None:
    account.failed_attempts = (account.failed_attempts or 0) + 1
    if account.failed_attempts >= max_failures:
        account.locked_until = now + timedelta(minutes=lock_minutes)


def open_expired_lock(account: Account, now: datetime) -> None:
    """Refuse while the account is locked; once the lock has expired, clear it and start both
    counters (passwords, one-time codes) again.

    Raises:
        AccountLocked: ``now`` is inside the lock window.
    """
    if account.locked_until is None:
        return
    if account.locked_until > now:
        raise AccountLocked(account.locked_until)
    account.locked_until = None
    account.failed_attempts = 0
    account.code_failures = 0


def authenticate_password(
    session: Session,
    login: str,
    password: str,
    *,
    now: datetime | None = None,
    max_failures: int = 5,
    lock_minutes: int = 15,
) -> Account:
    """The account once ``password`` is verified for ``login`` (a login or a national id).

    After ``max_failures`` consecutive failures the account is locked for ``lock_minutes``;
    while locked the password is not even checked. Success resets the counter and sets
    ``last_login_at``; an outdated hash is re-hashed.

    The failure count is written to ``session`` before raising: catch the error *inside* the
    transaction (and audit it there) so that it is committed, not rolled back::

        with db.transaction() as session:
            try:
                account = authenticate_password(session, login, password)
            except AuthenticationFailed as exc:
                audit.record(session, actor=login, action="login", outcome=exc.code)
                ...

    Raises:
        AuthenticationFailed: unknown login or wrong password — the same message for both, and
            about the same time (a dummy verification is run for unknown logins).
        AccountLocked: an existing account inside its lock window.
        AccountSuspended: the right password for a suspended account.
    """
    now = now or utcnow()
    # Row lock: parallel guesses on one account are counted one after the other, so the
    # lock-out cannot be outrun by sending many attempts at once.
    account = find_account(session, login, for_update=True)
    if account is None or not account.password_hash:
        _burn_time(password)
        raise AuthenticationFailed()
    open_expired_lock(account, now)
    if not verify_password(account.password_hash, password):
        _record_failure(account, now, max_failures, lock_minutes)
        session.flush()
        raise AuthenticationFailed()
    if account.state is not AccountState.ACTIVE:
        raise AccountSuspended()
    account.failed_attempts = 0
    account.last_login_at = now
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    session.flush()
    return account


def set_password(account: Account, password: str) -> None:
    """Replace the account's password after checking its strength.

    Raises:
        WeakPassword: with the French list of problems.
    """
    problems = check_password_strength(password)
    if problems:
        raise WeakPassword(problems)
    account.password_hash = hash_password(password)
    account.failed_attempts = 0
    account.code_failures = 0
    account.locked_until = None


def create_account(
    session: Session,
    *,
    login: str,
    kind: AccountKind,
    password: str | None = None,
    professional: Professional | None = None,
    mailbox: Mailbox | None = None,
) -> Account:
    """A new active account. ``password`` None leaves password login impossible (card or
    certificate only).

    Raises:
        TrustSpaceError: the login is already used. WeakPassword: see ``set_password``.
    """
    normalised = login.strip().lower()
    if not normalised:
        raise TrustSpaceError("identifiant de connexion vide", code="bad_login")
    if session.execute(select(Account.id).where(Account.login == normalised)).first():
        raise TrustSpaceError(f"identifiant déjà utilisé : « {normalised} »", code="login_taken")
    account = Account(login=normalised, kind=kind, state=AccountState.ACTIVE,
                      professional=professional, mailbox=mailbox, failed_attempts=0,
                      code_failures=0)
    if password is not None:
        set_password(account, password)
    session.add(account)
    session.flush()
    return account


def create_professional_account(
    session: Session, professional: Professional, login: str, password: str | None
) -> Account:
    """The account of a professional; ``login`` is normally their personal mailbox address,
    which becomes ``Account.mailbox`` when that mailbox exists."""
    mailbox = session.execute(
        select(Mailbox).where(Mailbox.address == login.strip().lower())
    ).scalar_one_or_none()
    return create_account(session, login=login, kind=AccountKind.PROFESSIONAL, password=password,
                          professional=professional, mailbox=mailbox)


def record_protocol_failure(session: Session, identifier: str, *, now: datetime,
                            max_failures: int, lock_minutes: int) -> Account | None:
    """Count a wrong password given over another protocol (IMAP, through Dovecot's auth policy
    server, ``mailstore.authpolicy``) into the account's one lock-out, the webmail's
    (issue #14: failures on IMAP, SMTP and the webmail count towards one lock per account).

    Like ``authenticate_password``: nothing is counted while the account is locked (the lock is
    not extended by guesses made during it); an expired lock is cleared first. The caller's
    transaction commits the count. ``None`` for an unknown login.
    """
    account = find_account(session, identifier, for_update=True)
    if account is None:
        return None
    if account.locked_until is not None and account.locked_until > now:
        return account
    open_expired_lock(account, now)
    _record_failure(account, now, max_failures, lock_minutes)
    session.flush()
    return account


# ------------------------------------------------------------------ operator actions (issue #15)
class AccountActionRefused(TrustSpaceError):
    """An operator action that does not apply to this account (French message)."""

    code = "account_action_refused"


def search_accounts(session: Session, text: str, *, limit: int = 50) -> list[Account]:
    """People's accounts matching ``text``: an RPPS/ADELI (or national id), a login or mailbox
    address (or part of one), or words of the name (each word in the first or last name)."""
    from sqlalchemy import or_

    words = text.strip().split()[:5]
    if not words:
        return []
    query = (select(Account).outerjoin(Professional, Account.professional_id == Professional.id)
             .where(Account.kind == AccountKind.PROFESSIONAL))
    number = parse_national_id(words[0]) or (
        ("rpps" if len(words[0]) == 11 else "adeli", words[0])
        if words[0].isascii() and words[0].isdigit() and len(words[0]) in (9, 11) else None)
    if number is not None:
        column = Professional.rpps if number[0] == "rpps" else Professional.adeli
        query = query.where(column == number[1])
    else:
        for word in words:
            query = query.where(or_(*(c.icontains(word[:100], autoescape=True) for c in (
                Account.login, Professional.first_name, Professional.last_name))))
    order = (Professional.last_name, Professional.first_name, Account.login)
    return list(session.scalars(query.order_by(*order).limit(limit)))


def _person_only(account: Account, what: str) -> None:
    if account.is_operator or account.professional_id is None:
        raise AccountActionRefused(f"{what} : les comptes opérateur se gèrent avec la commande "
                                   "« mss account operator ».")


def unlock(account: Account) -> bool:
    """Lift a lock-out and clear both failure counters; False when there was nothing to do."""
    was = bool(account.locked_until or account.failed_attempts or account.code_failures)
    account.failed_attempts = 0
    account.code_failures = 0
    account.locked_until = None
    return was


def suspend(account: Account) -> None:
    """Suspend a person's account: no webmail, IMAP or SMTP log-in until reactivated.

    Raises:
        AccountActionRefused: an operator's account, or already suspended.
    """
    _person_only(account, "Suspension impossible")
    if account.state is AccountState.SUSPENDED:
        raise AccountActionRefused(f"Le compte {account.login} est déjà suspendu.")
    account.state = AccountState.SUSPENDED


def reactivate(session: Session, account: Account) -> None:
    """Reactivate a suspended account, unless its personal mailbox is closed.

    Raises:
        AccountActionRefused: already active, or every personal mailbox is closed.
    """
    if account.state is AccountState.ACTIVE:
        raise AccountActionRefused(f"Le compte {account.login} est déjà actif.")
    states = {m.state for m in mailboxes_of(session, account.professional_id,
                                            kind=MailboxKind.PERSONAL)} \
        if account.professional_id else set()
    if states == {MailboxState.CLOSED}:
        raise AccountActionRefused(f"La boîte personnelle de {account.login} est fermée : le "
                                   "compte ne peut pas être réactivé.")
    account.state = AccountState.ACTIVE


def reset_otp_channel(account: Account) -> OtpChannel:
    """Back to codes by e-mail to the usual address (a lost phone or authenticator app):
    the TOTP seed is erased. Returns the channel it had.

    Raises:
        AccountActionRefused: an operator's account (TOTP only).
    """
    _person_only(account, "Réinitialisation impossible")
    previous = account.otp_channel
    account.otp_channel = OtpChannel.EMAIL
    account.totp_secret = None
    return previous


def close_personal_mailbox(session: Session, account: Account, mailbox_id: int) -> Mailbox:
    """Close for good one of the account's personal mailboxes (unpublished, no more mail in
    or out) and suspend the account.

    Raises:
        AccountActionRefused: not a personal mailbox of this account's professional.
        InvalidTransition: already closed.
    """
    from trust_space import directory

    mailbox = session.get(Mailbox, mailbox_id)
    if (mailbox is None or account.professional_id is None or mailbox.operator_id is not None
            or mailbox.kind is not MailboxKind.PERSONAL
            or mailbox.professional_id != account.professional_id):
        raise AccountActionRefused("Cette boîte n'est pas une boîte personnelle de ce compte.")
    directory.close(session, mailbox)
    account.state = AccountState.SUSPENDED
    session.flush()
    return mailbox
