"""The national directory feed (issue #20): what the Annuaire Santé is told about our mailboxes.

The ANS guide "API MSS" (``ans.fhir.fr.mss``: *Spécifications techniques — flux
d'alimentation*, *vue d'ensemble*) models a mailbox (BAL) as a ``telecom`` entry of the resource
that carries it, written by **FHIR Patch** (a ``Parameters`` resource of ``operation`` parts,
``application/fhir+json``) sent as a **conditional PATCH** on the carrier's business
identifier:

- personal mailbox: ``PATCH [base]/Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|<idnatps>``
  (idnatps = "8" + RPPS, or "0" + ADELI);
- organisational mailbox: ``PATCH [base]/Organization?identifier=https://finess.esante.gouv.fr|
  <FINESS>``.

Each life-cycle event gives one patch of the entry chosen by its address
(``<Resource>.telecom.where(value = '<address>')``): *published* → ``insert`` at index 0 (the
guide makes ``index`` compulsory), *liste rouge on / off* → ``replace`` of the whole entry
(its ``listeRouge`` flag set), *closed* → ``delete``. The entry is ``trust_space.fhir``'s
``mailbox_telecom``, the one builder of it; its address and type are never changed ("L'adresse
et le type d'une BAL ne sont pas modifiables"). Applicative mailboxes are never published
(an operator rule of mss, stricter than the guide), nor are peers' mailboxes (theirs to feed).

A patch is queued (``DirectoryFeed``) in the transaction of the change, validated with
``fhir.resources`` (R4B ``Parameters``: the same elements as R4 4.0.1, the guide's version).
Workers lease due rows (``claim``), send them (``mss.annuaire``: no HTTP here) and record the
answer: 2xx sent; 404 (no resource matches) and 412 (several match) wait for an operator, as do
other refusals; no answer, 401, 403, 408, 429 and 5xx are retried with backoff. Rows of one
address go in order: one is due only when every earlier row of that address is sent or
resolved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from core.db import utcnow
from trust_space.errors import TrustSpaceError
from trust_space.fhir import OID_IDNPS, mailbox_telecom
from trust_space.models import (
    DirectoryFeed,
    FeedEvent,
    FeedState,
    Mailbox,
    MailboxKind,
    MailboxState,
)
from trust_space.naming import parse_national_id

FINESS_SYSTEM = "https://finess.esante.gouv.fr"  # the guide's idnatstruct system for FINESS
MAX_ATTEMPTS = 12  # then "failed" (about 8 h with the default 60 s base)
MAX_BACKOFF = 3600.0
FINAL = (FeedState.SENT, FeedState.RESOLVED)
WAITING = (FeedState.NOT_FOUND, FeedState.PRECONDITION_FAILED, FeedState.FAILED)
# 401/403 say our credentials are wrong, not the row: retried, so that a fixed token resumes
# the feed without resending each row by hand.
RETRIED = frozenset({401, 403, 408, 425, 429})
_LISTED = (MailboxState.PUBLISHED, MailboxState.SUSPENDED)  # known to the national directory
EVENT_FR = {FeedEvent.PUBLISHED: "publication", FeedEvent.LISTE_ROUGE_ON: "liste rouge",
            FeedEvent.LISTE_ROUGE_OFF: "sortie de liste rouge", FeedEvent.CLOSED: "fermeture"}
STATE_FR = {FeedState.PENDING: "à envoyer", FeedState.SENDING: "en cours d'envoi",
            FeedState.SENT: "envoyé", FeedState.NOT_FOUND: "inconnu de l'annuaire (404)",
            FeedState.PRECONDITION_FAILED: "identifiant ambigu (412)",
            FeedState.FAILED: "en échec", FeedState.RESOLVED: "résolu"}


class FeedActionRefused(TrustSpaceError):
    """An operator action that does not apply to this row (French message)."""

    code = "feed_action_refused"


# ------------------------------------------------------------------ events → patches
def transition_event(before: MailboxState, after: MailboxState) -> FeedEvent | None:
    """The event a publication state change is for the national directory: the first
    publication, and the closing of a mailbox it knows. Suspension is not published."""
    if after is MailboxState.PUBLISHED and before is MailboxState.PENDING_VALIDATION:
        return FeedEvent.PUBLISHED
    if after is MailboxState.CLOSED and before in _LISTED:
        return FeedEvent.CLOSED
    return None


def is_listed(mailbox: Mailbox) -> bool:
    """True when the national directory knows the mailbox (a liste rouge change is sent)."""
    return MailboxState(mailbox.state) in _LISTED


def fhirpath_string(value: str) -> str:
    """``value`` as a FHIRPath string literal (FHIRPath §Literals: ``\\'``, ``\\\\``, and
    ``\\uXXXX`` for control characters), so that no address can end the literal early."""
    out = []
    for char in value:
        if char in ("\\", "'"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def _resource(mailbox: Mailbox) -> str:
    return "Practitioner" if mailbox.kind is MailboxKind.PERSONAL else "Organization"


def target_of(mailbox: Mailbox) -> str:
    """``system|value`` of the conditional PATCH (see the module docstring).

    Raises:
        FeedActionRefused: the mailbox's holder has no national identifier.
    """
    if mailbox.kind is MailboxKind.PERSONAL:
        pro = mailbox.professional
        idnat = pro.national_id if pro is not None else ""
        if parse_national_id(idnat) is None:
            raise FeedActionRefused("boîte personnelle sans professionnel RPPS / ADELI")
        return f"{OID_IDNPS}|{idnat}"
    finess = mailbox.structure.finess if mailbox.structure is not None else None
    if not finess or len(finess) != 9 or not (finess.isascii() and finess.isdigit()):
        raise FeedActionRefused("boîte organisationnelle sans structure FINESS")
    return f"{FINESS_SYSTEM}|{finess}"


def build_patch(mailbox: Mailbox, event: FeedEvent) -> dict[str, Any]:
    """The ``Parameters`` resource (FHIR Patch) telling ``event`` about ``mailbox``."""
    resource = _resource(mailbox)
    entry = f"{resource}.telecom.where(value = {fhirpath_string(mailbox.address)})"
    telecom = mailbox_telecom(mailbox, certificate=False)
    if event is FeedEvent.PUBLISHED:
        parts = [{"name": "type", "valueCode": "insert"},
                 {"name": "path", "valueString": f"{resource}.telecom"},
                 {"name": "index", "valueInteger": 0},
                 {"name": "value", "valueContactPoint": telecom}]
    elif event is FeedEvent.CLOSED:
        parts = [{"name": "type", "valueCode": "delete"},
                 {"name": "path", "valueString": entry}]
    else:
        parts = [{"name": "type", "valueCode": "replace"},
                 {"name": "path", "valueString": entry},
                 {"name": "value", "valueContactPoint": telecom}]
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}


def validate(body: dict[str, Any]) -> None:
    """Check ``body`` against FHIR's ``Parameters`` (fhir.resources, R4B).

    Raises:
        ValueError: with the library's account of what is wrong.
    """
    from fhir.resources.R4B.parameters import Parameters

    Parameters.model_validate(body)  # pydantic's ValidationError is a ValueError


def record_event(session: Session, mailbox: Mailbox, event: FeedEvent, *,
                 now: datetime | None = None) -> DirectoryFeed | None:
    """Queue the patch of ``event`` in the caller's transaction (never commits). None for a
    mailbox the national directory is not told about (a peer's, an applicative one). A patch
    that cannot be built (no RPPS / FINESS) or is not valid FHIR is kept as ``failed`` with
    the reason, for an operator to see: the mailbox change itself goes on."""
    if not mailbox.is_local or mailbox.kind is MailboxKind.APPLICATIVE:
        return None
    now = now or utcnow()
    row = DirectoryFeed(mailbox_id=mailbox.id, address=mailbox.address, event=event,
                        resource=_resource(mailbox), state=FeedState.PENDING, attempts=0,
                        next_attempt_at=now, created_at=now, updated_at=now)
    body = build_patch(mailbox, event)
    row.body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        row.identifier = target_of(mailbox)
        validate(body)
    except (FeedActionRefused, ValueError) as exc:
        row.state = FeedState.FAILED
        row.last_answer = f"non envoyé : {str(exc).splitlines()[0]}"[:500]
    session.add(row)
    session.flush()
    return row


# ------------------------------------------------------------------ the queue
@dataclass(frozen=True)
class Claimed:
    """A row a worker now holds: where and what to send."""

    id: int
    token: str
    address: str
    resource: str
    identifier: str
    body: str
    attempts: int


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt ``attempts + 1``: base, 2×base, 4×base … at most one hour."""
    return float(min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF))


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(and_(DirectoryFeed.state == FeedState.PENDING,
                    DirectoryFeed.next_attempt_at <= now),
               and_(DirectoryFeed.state == FeedState.SENDING, DirectoryFeed.lease_until < now))


def _not_blocked() -> ColumnElement[bool]:
    earlier = aliased(DirectoryFeed)
    return ~exists().where(earlier.address == DirectoryFeed.address,
                           earlier.id < DirectoryFeed.id, earlier.state.not_in(FINAL))


def claim(session: Session, token: str, *, limit: int = 10, lease_seconds: float = 120,
          now: datetime | None = None) -> list[Claimed]:
    """Lease up to ``limit`` due rows to ``token`` (unique per worker and round): PENDING and
    due, or SENDING whose lease expired (a worker died). PostgreSQL reads the candidates
    ``FOR UPDATE SKIP LOCKED``; SQLite's writers are serialised by ``BEGIN IMMEDIATE``
    (``core.db``). The UPDATE repeats the due condition: a row is never leased twice."""
    now = now or utcnow()
    query = (select(DirectoryFeed.id).where(_due(now), _not_blocked())
             .order_by(DirectoryFeed.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=DirectoryFeed)
    ids = list(session.scalars(query))
    if not ids:
        return []
    session.execute(update(DirectoryFeed).where(DirectoryFeed.id.in_(ids), _due(now)).values(
        state=FeedState.SENDING, lease_owner=token,
        lease_until=now + timedelta(seconds=lease_seconds),
        attempts=DirectoryFeed.attempts + 1, updated_at=now,
    ).execution_options(synchronize_session=False))
    rows = session.scalars(select(DirectoryFeed).where(DirectoryFeed.lease_owner == token,
                                                       DirectoryFeed.state == FeedState.SENDING)
                           .order_by(DirectoryFeed.id)).all()
    return [Claimed(r.id, token, r.address, r.resource, r.identifier, r.body, r.attempts)
            for r in rows]


def outcome(status: int | None) -> FeedState | None:
    """What an answer means: a final state, or None to try again later."""
    if status is None or status in RETRIED or status >= 500:
        return None
    if 200 <= status < 300:
        return FeedState.SENT
    if status == 404:
        return FeedState.NOT_FOUND
    if status == 412:
        return FeedState.PRECONDITION_FAILED
    return FeedState.FAILED


def record_answer(session: Session, claimed: Claimed, status: int | None, answer: str, *,
                  retry_base: float, now: datetime | None = None) -> FeedState | None:
    """Record the endpoint's answer (``status`` None: none came) and what follows; None when
    the lease was lost meanwhile (another worker took the row: its answer counts)."""
    now = now or utcnow()
    row = session.get(DirectoryFeed, claimed.id, with_for_update=True)
    if row is None or row.lease_owner != claimed.token or row.state is not FeedState.SENDING:
        return None
    state = outcome(status)
    if state is None:
        if row.attempts >= MAX_ATTEMPTS:
            state = FeedState.FAILED
        else:
            state = FeedState.PENDING
            row.next_attempt_at = now + timedelta(seconds=backoff(row.attempts, retry_base))
    row.state, row.lease_owner, row.lease_until = state, None, None
    row.last_status, row.last_answer, row.updated_at = status, answer[:500], now
    session.flush()
    return state


# ------------------------------------------------------------------ operator's side
def entry(session: Session, feed_id: int) -> DirectoryFeed:
    """One row of the feed.

    Raises:
        FeedActionRefused: no such row.
    """
    row = session.get(DirectoryFeed, feed_id)
    if row is None:
        raise FeedActionRefused("Envoi inconnu.", code="not_found")
    return row


def resend(session: Session, feed_id: int, *, now: datetime | None = None) -> DirectoryFeed:
    """Send the same patch again, now, with a fresh count of attempts: a refused or failed
    row, or one marked resolved. Never one the directory accepted (an insert would be doubled).

    Raises:
        FeedActionRefused: unknown, already waiting to be sent, accepted, or one that could not
            be built.
    """
    row = entry(session, feed_id)
    if row.state in (FeedState.PENDING, FeedState.SENDING):
        raise FeedActionRefused(f"L'envoi {row.id} ({row.address}) est déjà en cours.")
    if row.state is FeedState.SENT:
        raise FeedActionRefused(f"L'envoi {row.id} ({row.address}) a déjà été accepté par "
                                "l'annuaire national.")
    if not row.identifier:
        raise FeedActionRefused(f"L'envoi {row.id} ({row.address}) ne peut pas partir : "
                                f"{row.last_answer}")
    now = now or utcnow()
    row.state, row.attempts, row.next_attempt_at, row.updated_at = (
        FeedState.PENDING, 0, now, now)
    session.flush()
    return row


def resolve(session: Session, feed_id: int, *, now: datetime | None = None) -> DirectoryFeed:
    """Mark a refused or failed row as settled by hand (the next rows of its address go).

    Raises:
        FeedActionRefused: unknown, or not waiting for an operator.
    """
    row = entry(session, feed_id)
    if row.state not in WAITING:
        raise FeedActionRefused(f"L'envoi {row.id} ({row.address}) n'attend pas d'opérateur.")
    row.state, row.updated_at = FeedState.RESOLVED, now or utcnow()
    session.flush()
    return row


def entries(session: Session, state: FeedState | None = None, *,
            limit: int = 200) -> list[DirectoryFeed]:
    """The latest rows, newest first; only those in ``state`` when given."""
    query = select(DirectoryFeed).order_by(DirectoryFeed.id.desc()).limit(limit)
    if state is not None:
        query = query.where(DirectoryFeed.state == state)
    return list(session.scalars(query))


def counts(session: Session) -> dict[FeedState, int]:
    """Rows per state (every state listed, zero or not)."""
    found = {state: int(n) for state, n in session.execute(
        select(DirectoryFeed.state, func.count()).group_by(DirectoryFeed.state))}
    return {state: found.get(state, 0) for state in FeedState}
