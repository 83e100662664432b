"""A pooled IMAP session does not grow with the pages it serves (issue 19).

imaplib keeps every response code and unsolicited response no command reads in lists that only
a SELECT empties; the webmail's pooled sessions stay selected, and Dovecot answers each STATUS
of the selected folder (the sidebar's counts, the read view's folders) with ``OK [CLIENTBUG]``:
six more entries per inbox-and-message visit, for as long as the person kept using the
webmail. The pool now drops them when a session comes back (``forget_responses``).
"""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from mailstore.imap import imaplib_of
from mailstore.pool import ImapPool
from tests.mailstore_fixtures import PASSWORD
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id

pytest_plugins = ["tests.webmail_mail_fixtures"]


def _kept(pool: ImapPool) -> int:
    """Responses imaplib holds in the pool's idle sessions."""
    return sum(len(values) for entries in pool._idle.values() for _, session in entries
               for values in imaplib_of(session.client).untagged_responses.values())


def test_pages_leave_no_responses_in_the_pooled_session(
        mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    imap = mail_web.space.imaps()
    imap.login(address("marie"), PASSWORD)
    imap.append("INBOX", None, None, mail_web.space.message("Compte rendu"))
    imap.select("INBOX")
    uid = int(imap.uid("SEARCH", "ALL")[1][0].split()[-1])
    imap.logout()
    marie, box = as_user("marie"), box_id(mail_web, address("marie"))
    pool: ImapPool | None = None
    kept = []
    for _ in range(12):
        assert marie.get(f"/courrier/{box}").status_code == 200
        assert marie.get(f"/courrier/{box}/message/{uid}").status_code == 200
        pool = mail_web.app.extensions["mss.imap"]
        kept.append(_kept(pool))
    assert pool is not None and pool.idle_count(address("marie")) >= 1
    assert max(kept) == 0, f"réponses IMAP accumulées dans la session : {kept}"
