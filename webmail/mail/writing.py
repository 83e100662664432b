"""What a person chose for writing (Mon compte, « Rédaction »): how long a sent message waits
for « Annuler », and a signature per mailbox they may send as; and which mailboxes those are
(the compose page's « De » list).

The « De » list is the mailboxes the user may open with the right to send
(``webmail.mail.access``) that the gateway would also accept as sender for them
(``trust_space.policy.may_send_as``: held by them or by delegation, and published) — so the page
never offers an address the gateway would refuse at MAIL FROM.
"""

from __future__ import annotations

import re
from typing import cast

from flask import g
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.settings import UNDO_SEND_CHOICES
from trust_space.models import AccountKind
from trust_space.policy import Identity, may_send_as
from webmail.context import mss
from webmail.mail.access import Box, Right, accessible_boxes
from webmail.models import MailSignature, WritingPreference

SIGNATURE_MAX = 1000  # characters
SIGNATURE_LINES = 12
SEPARATOR = "-- "  # RFC 3676 §4.3: "-- " alone on its line opens the signature
# Controls other than the line feed and the tab have no place in a signature (typed, pasted).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class SignatureError(ValueError):
    """A signature that cannot be kept; ``str()`` says why, in French."""


def clean_signature(text: str) -> str:
    """``text`` as a stored signature: LF line ends, no controls, no trailing blanks, no
    separator of its own (we add it).

    Raises:
        SignatureError: longer than ``SIGNATURE_MAX`` characters or ``SIGNATURE_LINES`` lines.
    """
    text = _CONTROLS.sub("", (text or "").replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and lines[0] in ("", "--", SEPARATOR.strip()):
        lines.pop(0)
    text = "\n".join(lines).strip("\n")
    if len(text) > SIGNATURE_MAX:
        raise SignatureError(f"La signature dépasse {SIGNATURE_MAX} caractères "
                             f"({len(text)}) : raccourcissez-la.")
    if text.count("\n") >= SIGNATURE_LINES:
        raise SignatureError(f"La signature dépasse {SIGNATURE_LINES} lignes : "
                             "raccourcissez-la.")
    return text


def signature_block(text: str) -> str:
    """The signature as it sits in a message body: the separator line, then the text
    (empty when there is no signature)."""
    return f"{SEPARATOR}\n{text}" if text else ""


def undo_seconds(db: Session, account_id: int) -> int:
    """The person's undo delay, else the operator's default (``MSS_UNDO_SEND_SECONDS``)."""
    chosen = db.scalar(select(WritingPreference.undo_seconds).where(
        WritingPreference.account_id == account_id))
    if chosen in UNDO_SEND_CHOICES:
        return int(chosen)
    return mss().settings.undo_send_seconds


def set_undo_seconds(db: Session, account_id: int, seconds: int) -> bool:
    """Record the person's choice; True when it changed."""
    if seconds not in UNDO_SEND_CHOICES:
        raise ValueError(seconds)
    row = db.get(WritingPreference, account_id)
    if row is None:
        db.add(WritingPreference(account_id=account_id, undo_seconds=seconds))
        return True
    if row.undo_seconds == seconds:
        return False
    row.undo_seconds = seconds
    return True


def signatures(db: Session, account_id: int) -> dict[int, str]:
    """Mailbox id → the person's signature for it."""
    rows = db.execute(select(MailSignature.mailbox_id, MailSignature.text).where(
        MailSignature.account_id == account_id))
    return {mailbox_id: text for mailbox_id, text in rows}


def set_signature(db: Session, account_id: int, mailbox_id: int, text: str) -> bool:
    """Store the (cleaned) signature; an empty one removes it. True when it changed."""
    row = db.get(MailSignature, (account_id, mailbox_id))
    if row is None:
        if text:
            db.add(MailSignature(account_id=account_id, mailbox_id=mailbox_id, text=text))
        return bool(text)
    if not text:
        db.delete(row)
        return True
    if row.text == text:
        return False
    row.text = text
    return True


def sendable_boxes() -> list[Box]:
    """The mailboxes the user may send as (see the module docstring), own one first. Cached
    for the request."""
    if "sendable_boxes" in g:
        return cast(list[Box], g.sendable_boxes)
    candidates = [b for b in accessible_boxes() if b.can(Right.SEND)]
    identity = Identity(kind=AccountKind.PROFESSIONAL, login=current_user.login,
                        professional_id=current_user.professional_id)
    with mss().db.reading() as conn:
        boxes = [b for b in candidates if may_send_as(conn, identity, b.address)]
    g.sendable_boxes = boxes
    return boxes


def sender_box(value: str | None, default: Box) -> Box | None:
    """The mailbox a posted « De » names (its id), among ``sendable_boxes``; ``default`` when
    nothing was posted; None when the value names anything else (forged or stale)."""
    text = (value or "").strip()
    if not text:
        return default if default in sendable_boxes() else None
    if not (text.isascii() and text.isdigit() and len(text) < 12):
        return None
    return next((b for b in sendable_boxes() if b.id == int(text)), None)
