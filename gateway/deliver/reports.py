"""What follows a delivery, inside the transaction that records it (DESIGN.md steps 5 and 7):

- a DSN (RFC 3464, ``gateway.deliver.dsn``) to the envelope sender for the recipients that failed
  for
  good or whose retries expired — never for a DSN or MDN, never to a null sender
  (RFC 5321 §4.5.5);
- an MDN (RFC 8098, ``gateway.deliver.mdn``) ``processed`` after a local delivery when the message
  asks
  for one (``dispatched`` instead with Direct's ``X-DIRECT-FINAL-DESTINATION-DELIVERY``
  option: one receipt per event), never for a report; a malformed request is ignored;
- a notification row for the recipient's usual address when the mailbox asks for it.

Reports are queued like any message, with a null envelope sender, and only to addresses
inside the trust space: a report never leaves it. A report for a local mailbox carries our
sealed ``Authentication-Results`` with ``policy.mss-report`` (``mailformat.authresults``), so the
reader shows it as written by its operator, not as an unverified message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core.settings import Settings
from gateway.accept import checks, opening
from gateway.deliver import mdn
from gateway.deliver.dsn import Failure, build_dsn
from mailformat import authresults
from spool import queue as q
from spool.events import Event
from spool.models import Origin, RecipientKind
from spool.queue import Claimed, Row
from trust_space.models import Mailbox, Professional
from trust_space.policy import may_receive

log = logging.getLogger("mss.gateway")


def queue_report(session: Session, settings: Settings, origin: Origin, body: bytes,
                 to: str) -> str | None:
    """Queue a generated report for ``to`` with ``MAIL FROM:<>``; its queue id, or None when
    ``to`` is outside the trust space (dropped, logged)."""
    decision = may_receive(session, to, {settings.domain})
    if not decision:
        log.warning("rapport %s non envoyé : destinataire hors de l'espace de confiance",
                    origin.value)
        return None
    queue_id = q.new_queue_id()
    body, key = checks.message_key(body, queue_id, settings.domain)
    local = decision.code == "local"
    if local:  # the reader sees that its operator wrote it (mailformat.authresults)
        body = _sealed_report(body, settings, origin)
    q.enqueue(session, queue_id=queue_id, origin=origin, envelope_from="", message_key=key,
              submitter="mss", size=len(body), local=body if local else None,
              peer=None if local else body,
              recipients=[(to.lower(), RecipientKind.LOCAL if local else RecipientKind.PEER)])
    return queue_id


def _sealed_report(body: bytes, settings: Settings, origin: Origin) -> bytes:
    verdict = opening.Verdict("none", None, False, "rapport genere par l'operateur", None)
    stamped = opening.stamp(body, verdict, settings.domain)
    return authresults.seal(stamped, authresults.key_for(settings), datetime.now(UTC),
                            report=origin.value)


def send_dsn(session: Session, settings: Settings, claimed: Claimed,
             failures: Sequence[Failure]) -> None:
    """One DSN for the failures of one message in this batch."""
    if not claimed.envelope_from or claimed.origin in (Origin.DSN, Origin.MDN) or not failures:
        return
    try:
        body = build_dsn(original=claimed.raw_local or claimed.raw_peer or b"",
                         envelope_from=claimed.envelope_from, failures=failures,
                         reporting_mta=settings.hostname, queue_id=claimed.queue_id,
                         arrival=claimed.created_at, from_domain=settings.domain)
    except ValueError as exc:
        log.warning("DSN de %s impossible : %s", claimed.queue_id, exc)
        return
    if queue_report(session, settings, Origin.DSN, body, claimed.envelope_from):
        for failure in failures:
            q.event(session, claimed.queue_id, claimed.message_key, failure.recipient, Event.DSN,
                    failure.status)


# Built once: it runs after every local delivery (on the session's connection: Core, not the
# ORM's compile on each call).
_NOTIFY_USUAL = select(Mailbox.address, Professional.usual_email).join(Professional).where(
    Mailbox.address.in_(bindparam("addresses", expanding=True)),
    Mailbox.notify_usual_email.is_(True))


def after_local(session: Session, settings: Settings, claimed: Claimed,
                rows: Sequence[Row]) -> None:
    """Notifications and MDNs after the delivery of ``rows`` (LOCAL recipients of one
    message)."""
    usual = session.connection().execute(_NOTIFY_USUAL, {"addresses": [r.address for r in rows]})
    q.add_recipients(session, claimed, [(email.lower(), RecipientKind.NOTIFY)
                                        for _address, email in usual if email])
    if claimed.origin in (Origin.SUBMISSION, Origin.RELAY) and claimed.raw_local:
        to = mdn.mdn_request(claimed.raw_local, return_path=claimed.envelope_from)
        if to is not None:  # else no request, or one we must not answer (RFC 8098 §2.1)
            for row in rows:
                _mdn(session, settings, claimed, row, to)


def _mdn(session: Session, settings: Settings, claimed: Claimed, row: Row, to: str) -> None:
    raw = claimed.raw_local or b""
    final = mdn.wants_final_delivery(raw)
    # One receipt per event: here the event is the delivery, and with Direct's final-delivery
    # option "dispatched" says all that "processed" would (we are both HISP and destination).
    kinds = [mdn.DISPATCHED] if final else [mdn.PROCESSED]
    for disposition in kinds:
        try:
            body = mdn.build_mdn(original=raw, final_recipient=row.address,
                                 reporting_ua=f"{settings.hostname}; mss",
                                 disposition=disposition, from_addr=row.address,
                                 return_path=claimed.envelope_from,
                                 final_delivery=final and disposition == mdn.DISPATCHED)
        except ValueError:  # malformed request: ignored safely
            return
        if queue_report(session, settings, Origin.MDN, body, to):
            q.event(session, claimed.queue_id, claimed.message_key, row.address, Event.MDN,
                    disposition.rpartition(" ")[2])
