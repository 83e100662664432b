"""Receipts and delivery reports as a sender reads them (issue #15 item 8), through the real
gateway, Dovecot and webmail: one receipt per event, written in French with the Paris time
(one English line after it), shown as coming from the operator (the gateway's sealed
verdict, not "Non vérifié par la passerelle"), and a delivery timeline that reads as
sentences."""

from __future__ import annotations

import email
import email.policy
import html
import re
import time
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, text

pytest_plugins = ["tests.webmail_mail_fixtures"]


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul")}


def _request(marker: str, *, final: bool = False) -> bytes:
    marie, paul = address("marie"), address("paul")
    options = ("Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY="
               "optional,true\r\n") if final else ""
    return (f"From: {marie}\r\nTo: {paul}\r\nSubject: {marker}\r\n"
            "Date: Thu, 03 Dec 2026 20:09:00 +0000\r\n"
            f"Disposition-Notification-To: {marie}\r\n{options}\r\nBonjour.\r\n").encode()


def _receipts(op: Operator, marker: str) -> list[bytes]:
    return [r for r in op.messages(address("marie"))
            if b"disposition-notification" in r.lower() and marker.encode() in r]


def _wait_receipts(op: Operator, marker: str) -> list[bytes]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = _receipts(op, marker)
        if found:
            time.sleep(1.5)  # a second receipt for the same event would be queued with it
            return _receipts(op, marker)
        time.sleep(0.2)
    raise AssertionError("aucun accusé de réception")


@pytest.mark.parametrize("final", [False, True])
def test_one_receipt_per_delivery_in_french_with_the_paris_hour(
        final: bool, mail_operator: Operator) -> None:
    marker = f"accuse-{uuid.uuid4().hex[:8]}"
    mail_operator.submit(address("marie"), [address("paul")], _request(marker, final=final))
    found = _wait_receipts(mail_operator, marker)
    assert len(found) == 1, "un seul accusé par événement"
    report = email.message_from_bytes(found[0], policy=email.policy.default)
    human = next(p for p in report.walk() if p.get_content_type() == "text/plain")
    words = human.get_content()
    assert "le 03/12/2026 à 21:09" in words  # 20:09 UTC in December is 21:09 in Paris
    assert "-- English --" not in words and words.count("\n") <= 6
    assert b"policy.mss-report=mdn" in found[0]


def test_the_receipt_is_shown_as_the_operator_s_and_the_timeline_as_sentences(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marker = f"suivi-{uuid.uuid4().hex[:8]}"
    mail_operator.submit(address("marie"), [address("paul")], _request(marker))
    _wait_receipts(mail_operator, marker)
    marie = as_user("marie")
    inbox = text(marie.get(f"/courrier/{boxes['marie']}?dossier=INBOX"))
    rows = [r for r in inbox.split("<tr")[1:] if "Accus" in html.unescape(r)]
    uids = [int(u) for r in rows for u in re.findall(r"/message/(\d+)\?dossier=INBOX", r)[:1]]
    assert uids, "accusé absent de la liste"
    page = text(marie.get(f"/courrier/{boxes['marie']}/message/{max(uids)}?dossier=INBOX"))
    assert "Accusé de réception émis par votre opérateur" in html.unescape(page)
    assert "Non vérifié par la passerelle" not in html.unescape(page)
    sent = text(marie.get(f"/courrier/{boxes['marie']}?dossier=Sent"))
    uid = re.search(rf'/message/(\d+)\?dossier=Sent"[^>]*>{marker}<', sent)
    assert uid is not None
    timeline = html.unescape(text(marie.get(
        f"/courrier/{boxes['marie']}/message/{uid.group(1)}?dossier=Sent")))
    assert re.search(r"Remis à Paul Durand le \d\d/\d\d à \d\d:\d\d\.", timeline)
    assert re.search(r"Accusé de réception reçu de Paul Durand le \d\d/\d\d à \d\d:\d\d\.",
                     timeline)
    assert "(250)" not in timeline
