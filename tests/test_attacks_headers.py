"""Attacks on what a reader believes of a sender (issue #14 items 1 and 7), through the real
gateway (smtplib), Dovecot (imaplib) and webmail:

- item 1: a header section the gateway cut one way and Dovecot or Python's parser another (a
  bare CR before a forged ``From``, a bare LF, a repeated From, a line without a colon) was
  accepted and stamped ``smime=pass``; it is now refused at the end of DATA, ``550 5.6.0``,
  and nothing is delivered;
- item 7: the list's "✔ signé" came from any ``Authentication-Results`` field, which an IMAP
  APPEND can write; it now needs the gateway's seal, and a display name holding another
  address is not what the list shows.
"""

from __future__ import annotations

import html
import imaplib
import re
import smtplib
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, text

pytest_plugins = ["tests.webmail_mail_fixtures"]

MARIE, PAUL = "marie.martin@mss.test", "paul.durand@mss.test"


def _message(marker: str, first: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    return first + eol.join([
        b"From: " + MARIE.encode(), b"To: " + PAUL.encode(), b"Subject: " + marker.encode(),
        b"Date: Fri, 04 Dec 2026 10:00:00 +0100", b"", b"Bonjour.", b""])


def _send(op: Operator, message: bytes) -> tuple[int, bytes]:
    """DATA as marie to paul over STARTTLS; the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", op.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=op.client_context())
        smtp.login(MARIE, PASSWORD)
        smtp.mail(MARIE)
        smtp.rcpt(PAUL)
        return smtp.data(message)


FORGERIES = {
    "bare CR then a From": b"Subject: hi\rFrom: Paul Durand <paul.durand@mss.test>\r\n",
    "only the bare-CR From": b"X-Note: hi\rFrom: Paul Durand <paul.durand@mss.test>\r\n",
    "bare LF": b"X-Note: hi\nFrom: Paul Durand <paul.durand@mss.test>\r\n",
    "a second From": b"From: Paul Durand <paul.durand@mss.test>\r\n",
    "a line without colon": b"From Paul Durand <paul.durand@mss.test>\r\n",
    "white space before the colon": b"From : Paul Durand <paul.durand@mss.test>\r\n",
}


@pytest.mark.parametrize("kind", sorted(FORGERIES))
def test_a_header_readers_would_cut_differently_is_refused(kind: str,
                                                           mail_operator: Operator) -> None:
    marker = f"forge-{uuid.uuid4().hex[:8]}"
    code, reply = _send(mail_operator, _message(marker, FORGERIES[kind]))
    assert (code, reply[:5]) == (550, b"5.6.0"), reply
    assert b" / " in reply  # French, then English
    sentinel = f"ok-{uuid.uuid4().hex[:8]}"
    assert _send(mail_operator, _message(sentinel))[0] == 250
    mail_operator.wait_for(PAUL, lambda raw: sentinel.encode() in raw)
    assert not any(marker.encode() in raw for raw in mail_operator.messages(PAUL))


def test_an_all_lf_message_is_still_accepted(mail_operator: Operator) -> None:
    """smtplib sends a bytes message as it is: an all-LF header is read alike everywhere."""
    marker = f"lf-{uuid.uuid4().hex[:8]}"
    assert _send(mail_operator, _message(marker, eol=b"\n"))[0] == 250
    mail_operator.wait_for(PAUL, lambda raw: marker.encode() in raw)


def _envelope_from(op: Operator, who: str, marker: str) -> bytes:
    """What IMAP ENVELOPE (Dovecot's own parser) says of the message's From."""
    conn = op.imap(who)
    try:
        conn.select("INBOX", readonly=True)
        _, found = conn.search(None, "SUBJECT", marker)
        num = found[0].split()[-1]
        _, data = conn.fetch(num, "(ENVELOPE)")
        return data[0]  # type: ignore[return-value]
    finally:
        conn.logout()


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul")}


def _row(client: FlaskClient, box: int, marker: str) -> str:
    page = text(client.get(f"/courrier/{box}?dossier=INBOX"))
    rows = [r for r in page.split("<tr")[1:] if marker in html.unescape(r)]
    assert rows, f"{marker} absent de la liste"
    return rows[0]


def _who(row: str) -> str:
    found = re.search(r'class="col-who"><a[^>]*>([^<]*)</a>', row)
    assert found is not None
    return html.unescape(found.group(1)).strip()


def test_the_list_shows_signed_only_under_the_gateway_seal(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    """Marie's signed message shows "✔ signé" in Paul's list; the same bytes placed by IMAP
    APPEND with the From changed (or copied as they are into another message with a new
    Subject) keep our Authentication-Results but not the seal: "⚠ non vérifié"."""
    marker = f"seal-{uuid.uuid4().hex[:8]}"
    mail_operator.submit(MARIE, [PAUL], _message(marker))
    stored = mail_operator.wait_for(PAUL, lambda raw: marker.encode() in raw)
    assert b"policy.mss-seal=" in stored and b"smime=pass" in stored
    paul = as_user("paul")
    assert "✔ signé" in html.unescape(_row(paul, boxes["paul"], marker))
    assert b"marie.martin" in _envelope_from(mail_operator, PAUL, marker)
    for old, new in ((b"From: " + MARIE.encode(), b"From: Jean Dupont <jean.dupont@mss.test>"),
                     (marker.encode(), b"copie-" + marker.encode())):
        forged = stored.replace(old, new, 1)
        conn = mail_operator.imap(PAUL)
        try:
            assert conn.append("INBOX", "", imaplib.Time2Internaldate(0), forged)[0] == "OK"
        finally:
            conn.logout()
    page = text(paul.get(f"/courrier/{boxes['paul']}?dossier=INBOX"))
    forged_rows = [html.unescape(r) for r in page.split("<tr")[1:]
                   if "jean.dupont" in html.unescape(r) or "copie-" + marker in r]
    assert len(forged_rows) == 2
    for row in forged_rows:
        assert "✔ signé" not in row and "⚠ non vérifié" in row


def test_a_display_name_holding_another_address_is_not_what_the_list_shows(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marker = f"nom-{uuid.uuid4().hex[:8]}"
    spoof = _message(marker).replace(
        b"From: " + MARIE.encode(),
        b'From: "Paul Durand <paul.durand@mss.test>" <' + MARIE.encode() + b">")
    mail_operator.submit(MARIE, [PAUL], spoof)
    mail_operator.wait_for(PAUL, lambda raw: marker.encode() in raw)
    assert _who(_row(as_user("paul"), boxes["paul"], marker)) == MARIE
    other = f"autre-{uuid.uuid4().hex[:8]}"
    mail_operator.submit(MARIE, [PAUL], _message(other).replace(
        b"From: " + MARIE.encode(), b"From: Dr Jean Dupont <" + MARIE.encode() + b">"))
    mail_operator.wait_for(PAUL, lambda raw: other.encode() in raw)
    assert _who(_row(as_user("paul"), boxes["paul"], other)) == f"Dr Jean Dupont <{MARIE}>"


def test_the_read_view_checks_the_signature_at_the_gateway_time_not_the_date_field(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    """Issue #14 item 8: the sender writes ``Date:``. Backdated to 2001, long before Marie's
    certificate existed, the signature is still checked when the gateway received it (and a
    backdated Date could not bring an expired certificate back to life)."""
    marker = f"date-{uuid.uuid4().hex[:8]}"
    mail_operator.submit(MARIE, [PAUL], _message(marker).replace(
        b"Date: Fri, 04 Dec 2026 10:00:00 +0100", b"Date: Mon, 01 Jan 2001 10:00:00 +0100"))
    mail_operator.wait_for(PAUL, lambda raw: marker.encode() in raw)
    paul = as_user("paul")
    uid = re.search(r'/message/(\d+)\?dossier=INBOX', _row(paul, boxes["paul"], marker))
    assert uid is not None
    page = text(paul.get(f"/courrier/{boxes['paul']}/message/{uid.group(1)}?dossier=INBOX"))
    assert "badge-ok" in page and "signature vérifiée" in page, page[:3000]
