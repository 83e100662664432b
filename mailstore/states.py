"""The running mail store follows the trust space's states: a mailbox that stops being
published, or an account an operator suspends, loses its open IMAP sessions at once.

Dovecot checks the states only at log-in (``mailstore.sql``: passdb and master-user logins
want a published mailbox and an active account) and reads the delegates' rights from the ACL
files (``mailstore.acl``, published organisational mailboxes only). A state changes in the
database, from any process — the webmail's operator pages, ``mss account validate``, another
host on the same PostgreSQL — so the supervisor of ``mss run`` (``mailstore.service``) looks
at the states every few seconds, as it watches the CRL (a query of the few mailboxes not
published and accounts suspended): when they change, it rewrites the ACLs (a delegate loses
or gains the organisational mailbox within ``acl_cache_secs``) and kicks (``doveadm kick``)
the sessions of every login that just lost its right — the mailbox's own, the webmail's
master-user sessions as it, and the delegates of an organisational mailbox, whose session
already open on it would otherwise keep it. Clients log in again; Dovecot then refuses
what is no longer theirs. Each kick is in the audit trail.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import Database
from mailstore.config import DovecotPaths
from trust_space.holdings import logins_of, mailboxes_of
from trust_space.models import Account, AccountState, Mailbox, MailboxKind, MailboxState

log = logging.getLogger("mss.mailstore")

ACTOR = "mss-mailstore"
KICK_TIMEOUT = 30.0
NO_SESSION = 68  # doveadm's exit code (EX_NOHOST) when the login had no session to kick


@dataclass(frozen=True)
class Closed:
    """What may not hold an IMAP session: local mailboxes not published (address → state)
    and suspended accounts (logins)."""

    mailboxes: dict[str, MailboxState]
    accounts: frozenset[str]


def closed(session: Session) -> Closed:
    """The local mailboxes that are not published and the suspended accounts, now."""
    rows = session.execute(select(Mailbox.address, Mailbox.state).where(
        Mailbox.operator_id.is_(None), Mailbox.state != MailboxState.PUBLISHED))
    logins = session.scalars(select(Account.login).where(
        Account.state == AccountState.SUSPENDED))
    return Closed({address.lower(): state for address, state in rows},
                  frozenset(login.lower() for login in logins))


def to_kick(session: Session, before: Closed, now: Closed) -> dict[str, str]:
    """Login → why (the address that closed) of every login whose sessions must end: each
    mailbox newly suspended or closed, its delegates for an organisational one, and each
    account newly suspended. A new mailbox pending validation never had a session."""
    found = {login: login for login in now.accounts - before.accounts}
    for address in now.mailboxes.keys() - before.mailboxes.keys():
        if now.mailboxes[address] is not MailboxState.PENDING_VALIDATION:
            found.setdefault(address, address)
    orgs = [held for held in mailboxes_of(session, None, kind=MailboxKind.ORGANISATIONAL,
                                          states=(MailboxState.SUSPENDED, MailboxState.CLOSED))
            if held.address.lower() not in before.mailboxes]
    logins = logins_of(session, {held.professional_id for held in orgs})
    for held in orgs:
        login = logins.get(held.professional_id)
        if login is not None:
            found.setdefault(login.lower(), held.address.lower())
    return found


def still_connected(who: set[str], now: Closed) -> dict[str, str]:
    """Login → why of every login in ``who`` (``connected``, asked *before* the states
    ``now`` were read: a session opened after a republication is never matched against an
    older state) that is a closed mailbox or a suspended account. The difference of two
    polls (``to_kick``) misses a mailbox suspended, published and suspended again between
    them; what is connected does not."""
    barred = {address for address, state in now.mailboxes.items()
              if state is not MailboxState.PENDING_VALIDATION} | set(now.accounts)
    return {login: login for login in who & barred}


def connected(paths: DovecotPaths) -> set[str]:
    """The logins with an IMAP session open now (lower case); empty when Dovecot does not
    answer (the next round asks again)."""
    binary = shutil.which("doveadm") or "/usr/bin/doveadm"
    try:
        done = subprocess.run([binary, "-c", str(paths.conf), "-f", "tab", "who", "-1"],
                              capture_output=True, text=True, timeout=KICK_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines:
        return set()
    header = lines[0].split("\t")
    if "username" not in header:
        return set()
    column = header.index("username")
    return {fields[column].lower() for fields in (line.split("\t") for line in lines[1:])
            if len(fields) > column and fields[column]}


def kick(db: Database, paths: DovecotPaths, logins: dict[str, str]) -> None:
    """End the IMAP sessions of ``logins`` (login → the closed address it is kicked for) and
    audit each kick. Best effort: a login that cannot be kicked is logged, and Dovecot still
    refuses its next log-in."""
    for login, because in sorted(logins.items()):
        outcome = _doveadm_kick(paths, login)
        with db.transaction() as session:
            audit.record(session, actor=ACTOR, action="imap.kick", target=login,
                         outcome=outcome, request={"closed": because})


def _doveadm_kick(paths: DovecotPaths, login: str) -> str:
    """``doveadm kick`` of one login: ``ok`` (kicked), ``nothing`` (no session was open) or
    ``failed``."""
    binary = shutil.which("doveadm") or "/usr/bin/doveadm"
    try:
        done = subprocess.run([binary, "-c", str(paths.conf), "kick", login],
                              capture_output=True, text=True, timeout=KICK_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("doveadm kick %s impossible : %s", login, type(exc).__name__)
        return "failed"
    if done.returncode == NO_SESSION:
        return "nothing"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        log.warning("doveadm kick %s en échec (code %s) : %s", login, done.returncode, reason)
        return "failed"
    return "ok"
