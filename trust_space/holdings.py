"""Which local mailboxes a professional holds: the one query, for every part that asks.

A professional holds their own **personal** mailboxes (``Mailbox.professional_id``) and the
**organisational** ones a ``Delegation`` gives them, with its role. Applicative mailboxes are
held by the software bound to them (``trust_space.policy``), never by a person. Peer operators'
mailboxes (``operator_id`` set) are nobody's here.

Each caller says what it needs, and the differences are deliberate:

- the send/receive policy (``policy._is_holder``) asks whether one mailbox is held, whatever its
  state: holding is decided before the state, so the state of someone else's mailbox is never
  disclosed;
- the webmail (``webmail.mail.access``) and the IMAP ACLs (``mailstore.acl``) reach only
  *published* mailboxes: a pending, suspended or closed one is out of reach at the next
  request (the mail store kicks the IMAP sessions open on it, ``mailstore.states``).

Columns, not ORM entities: the relay asks for every MAIL FROM, on a bare connection too
(``core.db.Executor``); each shape of the statement is built once.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, null, select
from sqlalchemy.orm import InstrumentedAttribute

from core.db import Executor
from trust_space.models import Account, Delegation, Mailbox, MailboxKind, MailboxState, Role

NOT_CLOSED = frozenset(MailboxState) - {MailboxState.CLOSED}
_BATCH = 500
_Shape = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Holding:
    """A local mailbox as one professional holds it: ``role`` None for their own personal
    mailbox, else the role of their delegation."""

    mailbox_id: int
    address: str
    display_name: str
    kind: MailboxKind
    state: MailboxState
    professional_id: int
    role: Role | None


def mailboxes_of(session: Executor, professional_id: int | None, *, kind: MailboxKind,
                 states: Collection[MailboxState] | None = None,
                 mailbox_id: int | None = None) -> list[Holding]:
    """The local mailboxes of ``kind`` held by ``professional_id`` (by every professional when
    None: one ``Holding`` per holder), in ``states`` (any state when None), only
    ``mailbox_id`` when given; by display name.

    Raises:
        ValueError: ``kind`` is applicative (held by software, not by a professional).
    """
    shape = _statement(kind, frozenset(states) if states is not None else None,
                       professional_id is not None, mailbox_id is not None)
    values = {"who": professional_id, "mailbox": mailbox_id}
    rows = session.execute(shape, {k: v for k, v in values.items() if v is not None})
    return [Holding(*row) for row in rows]


def local_mailboxes(session: Executor, *, kind: MailboxKind,
                    states: Collection[MailboxState] | None = None) -> list[str]:
    """The addresses of every local mailbox of ``kind`` in ``states`` (any when None), held
    by someone or not."""
    query = select(Mailbox.address).where(Mailbox.kind == kind, Mailbox.operator_id.is_(None))
    if states is not None:
        query = query.where(Mailbox.state.in_(list(states)))
    return list(session.scalars(query))


def logins_of(session: Executor, professional_ids: Collection[int]) -> dict[int, str]:
    """The account login of each of ``professional_ids`` that has an account (asked by
    batches: SQLite caps the number of bound values of one statement)."""
    wanted = sorted(set(professional_ids))
    found: dict[int, str] = {}
    for start in range(0, len(wanted), _BATCH):
        rows = session.execute(select(Account.professional_id, Account.login).where(
            Account.professional_id.in_(wanted[start:start + _BATCH])))
        found.update((who, login) for who, login in rows if who is not None)
    return found


@functools.cache
def _statement(kind: MailboxKind, states: frozenset[MailboxState] | None, by_holder: bool,
               by_mailbox: bool) -> _Shape:
    """One shape of the query, built once (``mailboxes_of``'s values are bound on each call)."""
    columns = (Mailbox.id, Mailbox.address, Mailbox.display_name, Mailbox.kind, Mailbox.state)
    holder: InstrumentedAttribute[Any]
    query: _Shape
    if kind is MailboxKind.PERSONAL:  # one's own: the mailbox names its professional
        holder = Mailbox.professional_id
        query = select(*columns, holder, null().label("role")).where(holder.is_not(None))
    elif kind is MailboxKind.ORGANISATIONAL:  # through a delegation, with its role
        holder = Delegation.professional_id
        query = select(*columns, holder, Delegation.role).join(
            Delegation, Delegation.mailbox_id == Mailbox.id)
    else:
        raise ValueError(f"{kind} mailboxes are held by software, not by a professional")
    query = query.where(Mailbox.kind == kind, Mailbox.operator_id.is_(None))
    if by_holder:
        query = query.where(holder == bindparam("who"))
    if by_mailbox:
        query = query.where(Mailbox.id == bindparam("mailbox"))
    if states is not None:
        query = query.where(Mailbox.state.in_(sorted(states)))
    return query.order_by(Mailbox.display_name, Mailbox.id)
