"""Unread counts shown around the mail: the "Courrier" entry of the top bar, the box switcher
(personal and organisational mailboxes) and the page title.

One IMAP ``STATUS (UNSEEN)`` of each mailbox's Boîte de réception (RFC 9051 §6.3.11: no
SELECT, no message fetched), asked only when a page shows a count, at most once per request.
A count is a convenience: when the store does not answer, the page is shown without it.
"""

from __future__ import annotations

import logging
from typing import cast

from flask import g
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from core.errors import MssError
from webmail.mail.access import INBOX, Box, accessible_boxes, imap

log = logging.getLogger("mss.webmail.mail")


def inbox_unread() -> dict[int, int]:
    """Unread messages in the Boîte de réception of each of the user's mailboxes, by mailbox
    id; a mailbox whose count could not be read is absent."""
    if "mail_unread" in g:
        return cast(dict[int, int], g.mail_unread)
    counts: dict[int, int] = {}
    boxes = accessible_boxes()
    if boxes:
        try:
            with imap() as session:
                for box in boxes:
                    found = _unseen(session.client, box)
                    if found is not None:
                        counts[box.id] = found
        except (MssError, IMAPClientError, OSError) as exc:  # the page goes on without
            log.info("compteurs de non-lus indisponibles : %s", type(exc).__name__)
    g.mail_unread = counts
    return counts


def _unseen(client: IMAPClient, box: Box) -> int | None:
    """One STATUS; a mailbox the server refuses (a delegation just withdrawn) has no count."""
    try:
        status = client.folder_status(box.imap_name(INBOX), [b"UNSEEN"])
    except IMAPClientAbortError:
        raise  # the connection is gone: the pool must drop it
    except IMAPClientError:
        return None
    value = status.get(b"UNSEEN")
    return value if isinstance(value, int) else None


def total_unread() -> int | None:
    """All unread messages of the user's Boîtes de réception (None: nothing known)."""
    counts = inbox_unread()
    return sum(counts.values()) if counts else None
