"""Attacks on the webmail's compose form (issue #14, item 6), through the real webmail on a real
Dovecot and gateway: a line break in a subject, In-Reply-To or References (CR, LF, CRLF,
U+2028, U+0085 — characters a browser cannot type, so posted with Flask's test client and
the session's CSRF token) must neither give a 500 nor lose the message: the header comes out
as one clean line, in the recipient's copy as in the saved draft. The same for a received
message whose Message-ID decodes to several lines (reply, read receipt), and for files over
the attachment limit (the form comes back with its text and a clear error, in a real Chromium
too: ``tests/test_attacks_webmail_browser.py``)."""

from __future__ import annotations

import email
import email.policy
import html
import imaplib
import io
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, compose, csrf, post_form, text

pytest_plugins = ["tests.webmail_mail_fixtures"]

BREAKS = {"cr": "\r", "lf": "\n", "crlf": "\r\n", "u2028": "\u2028", "nel": "\x85"}


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul")}


def _header_lines(raw: bytes) -> list[str]:
    """The header section's physical lines (CRLF-separated, as stored)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.decode("utf-8", "replace").split("\r\n")


def _find(op: Operator, who: str, folder: str, marker: str) -> bytes:
    return op.wait_for(address(who), lambda raw: marker.encode() in raw, folder=folder)


def _assert_one_clean_line(raw: bytes, name: str, expected: str) -> None:
    """``name`` appears once, its value is ``expected`` (unfolded), nothing was injected."""
    lines = _header_lines(raw)
    assert not any(b"\r" in line.encode() or "\n" in line or "\u2028" in line
                   or "\x85" in line for line in lines)
    injected = [line for line in lines if line.lower().startswith(("x-injected", "bcc"))]
    assert injected == []
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_all(name) is not None and len(parsed.get_all(name)) == 1
    assert " ".join(str(parsed[name]).split()) == expected


@pytest.mark.parametrize("action", ["envoyer", "brouillon"])
@pytest.mark.parametrize("kind", list(BREAKS))
def test_line_break_in_subject_and_references_is_a_space(
        kind: str, action: str, boxes: dict[str, int], mail_operator: Operator,
        as_user: Callable[[str], FlaskClient]) -> None:
    brk = BREAKS[kind]
    marker = f"saut-{kind}-{action}-{uuid.uuid4().hex[:8]}"
    marie = as_user("marie")
    answer = compose(marie, boxes["marie"], action=action, to="paul.durand@mss.test",
                     subject=f"{marker}{brk}Bcc: pirate@exemple.fr",
                     in_reply_to=f"<orig-{marker}@mss.test>{brk}X-Injected: 1",
                     references=f"<a-{marker}@mss.test>{brk}X-Injected: 2",
                     body="Texte à ne pas perdre.")
    assert answer.status_code == 302, text(answer)[:2000]
    folder, who = ("Drafts", "marie") if action == "brouillon" else ("INBOX", "paul")
    raw = _find(mail_operator, who, folder, marker)
    _assert_one_clean_line(raw, "Subject", f"{marker} Bcc: pirate@exemple.fr")
    _assert_one_clean_line(raw, "In-Reply-To", f"<orig-{marker}@mss.test> X-Injected: 1")
    _assert_one_clean_line(raw, "References", f"<a-{marker}@mss.test> X-Injected: 2")
    assert b"Texte \xc3\xa0 ne pas perdre." in raw or b"Texte =C3=A0 ne pas perdre." in raw
    if action == "brouillon":
        drafts = text(marie.get(f"/courrier/{boxes['marie']}?dossier=Drafts"))
        assert marker in drafts


def _append(op: Operator, who: str, raw: bytes) -> None:
    conn = op.imap(address(who))
    try:
        typ, _ = conn.append("INBOX", "", imaplib.Time2Internaldate(0), raw)
        assert typ == "OK"
    finally:
        conn.logout()


def _uid_in_list(client: FlaskClient, box: int, marker: str) -> int:
    page = text(client.get(f"/courrier/{box}?dossier=INBOX"))
    for uid, title in re.findall(r'/message/(\d+)\?dossier=[^"]*">([^<]*)</a>', page):
        if marker in html.unescape(title):
            return int(uid)
    raise AssertionError(f"{marker} absent de la liste")


@pytest.fixture
def hostile_message(mail_operator: Operator, boxes: dict[str, int]) -> Iterator[str]:
    """In Marie's INBOX: a message whose Message-ID and Subject are RFC 2047 words decoding to
    CR LF (what a peer or an IMAP APPEND may store), asking for a read receipt."""
    marker = f"hostile{uuid.uuid4().hex[:8]}"
    raw = ("From: paul.durand@mss.test\r\nTo: marie.martin@mss.test\r\n"
           f"Subject: =?utf-8?q?{marker}=0D=0ABcc:_pirate@exemple.fr?=\r\n"
           f"Message-ID: =?utf-8?q?<{marker}@mss.test>=0D=0AX-Injected:_1?=\r\n"
           "Disposition-Notification-To: paul.durand@mss.test\r\n"
           "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nBonjour.\r\n").encode()
    _append(mail_operator, "marie", raw)
    yield marker


def test_reply_to_a_message_id_that_decodes_to_two_lines(
        hostile_message: str, boxes: dict[str, int], mail_operator: Operator,
        as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    uid = _uid_in_list(marie, boxes["marie"], hostile_message)
    page = text(marie.get(f"/courrier/{boxes['marie']}/ecrire?reponse={uid}&dossier=INBOX"))
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'name="(\w+)" type="hidden" value="([^"]*)"', page)}
    subject = re.search(r'name="subject" type="text" value="([^"]*)"', page)
    assert subject is not None
    assert "\r" not in fields["in_reply_to"] and "\n" not in fields["in_reply_to"]
    fields.pop("csrf_token", None)
    sent = compose(marie, boxes["marie"], to="paul.durand@mss.test",
                   subject=html.unescape(subject.group(1)), body="Réponse.", **fields)
    assert sent.status_code == 302, text(sent)[:2000]
    raw = _find(mail_operator, "paul", "INBOX", f"In-Reply-To: <{hostile_message}")
    _assert_one_clean_line(raw, "In-Reply-To", f"<{hostile_message}@mss.test> X-Injected: 1")


def test_read_receipt_for_a_message_id_that_decodes_to_two_lines(
        hostile_message: str, boxes: dict[str, int], mail_operator: Operator,
        as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    uid = _uid_in_list(marie, boxes["marie"], hostile_message)
    answer = post_form(marie, f"/courrier/{boxes['marie']}/message/{uid}/accuse?dossier=INBOX",
                       {"reponse": "envoyer"})
    assert answer.status_code == 302, text(answer)[:2000]
    raw = _find(mail_operator, "paul", "INBOX", f"Original-Message-ID: <{hostile_message}")
    _assert_one_clean_line(raw, "In-Reply-To", f"<{hostile_message}@mss.test> X-Injected: 1")
    _assert_one_clean_line(raw, "Subject",
                           f"Accusé de lecture : {hostile_message} Bcc: pirate@exemple.fr")


@pytest.mark.parametrize("action", ["envoyer", "brouillon"])
def test_upload_over_the_limit_keeps_the_form(
        action: str, boxes: dict[str, int], mail_web: Web,
        as_user: Callable[[str], FlaskClient]) -> None:
    """Over the attachment limit and over the message limit itself (where a 413 page used to
    lose everything): the form again, with its text, the error, nothing stored."""
    marie = as_user("marie")
    limit = mail_web.space.settings.max_message_size
    marker = f"gros-{action}-{uuid.uuid4().hex[:8]}"
    for size in (int(limit * 0.8), limit + 2 * 1024 * 1024):
        # The body built in memory (the test client's own spooling leaves a file open).
        boundary, data = encode_multipart({
            "csrf_token": csrf(marie), "action": action, "to": "paul.durand@mss.test",
            "cc": "", "subject": marker, "body": "Compte rendu complet, à garder.",
            "attachments": FileStorage(io.BytesIO(b"z" * size), "scanner.pdf",
                                       content_type="application/pdf")})
        answer = marie.post(f"/courrier/{boxes['marie']}/ecrire", data=data,
                            content_type=f"multipart/form-data; boundary={boundary}")
        page = text(answer)
        assert answer.status_code == 422, page[:2000]
        assert f'value="{marker}"' in page and "Compte rendu complet, à garder." in page
        assert "dépassent" in page and "au total" in page
    assert marker not in text(marie.get(f"/courrier/{boxes['marie']}?dossier=Drafts"))



BAD_UIDS = ["0", "4294967296", "99999999999999999999", "00", "²"]


@pytest.mark.parametrize("uid", BAD_UIDS)
def test_a_uid_that_is_not_one_is_a_404(uid: str, boxes: dict[str, int],
                                        as_user: Callable[[str], FlaskClient]) -> None:
    """RFC 9051 §2.3.1.1: a UID is 1 to 2³²−1. Any other number in a URL — reading, the body
    frame, a download, an XDM document, the read receipt, a draft or reply taken up — is a
    page that does not exist (404), not "mail store unavailable" (503) or a 500."""
    marie = as_user("marie")
    box = boxes["marie"]
    base = f"/courrier/{box}/message/{uid}"
    for url in (base, f"{base}/corps", f"{base}/piece/1", f"{base}/piece/1/document/0",
                f"/courrier/{box}/ecrire?brouillon={uid}",
                f"/courrier/{box}/ecrire?reponse={uid}&dossier=INBOX",
                f"/courrier/{box}/ecrire?transfert={uid}&dossier=INBOX"):
        answer = marie.get(url)
        assert answer.status_code == 404, (url, answer.status_code)
        assert "introuvable" in text(answer).lower()
    receipt = post_form(marie, f"{base}/accuse?dossier=INBOX", {"reponse": "envoyer"})
    assert receipt.status_code == 404


@pytest.mark.parametrize("uid", BAD_UIDS)
def test_a_posted_uid_that_is_not_one_is_ignored(uid: str, boxes: dict[str, int],
                                                 as_user: Callable[[str], FlaskClient]) -> None:
    """The same numbers in the forms (list actions, the draft being replaced, the message
    forwarded): never a 500 or a 503."""
    marie = as_user("marie")
    box = boxes["marie"]
    for action in ("marquer", "deplacer", "supprimer", "restaurer"):
        answer = post_form(marie, f"/courrier/{box}/{action}?dossier=INBOX",
                           {"uid": uid, "dossier": "INBOX", "cible": "Trash", "etat": "lu"})
        assert answer.status_code in (302, 400, 404), (action, answer.status_code)
    marker = f"uid-{uuid.uuid4().hex[:8]}"
    saved = compose(marie, box, action="brouillon", to="paul.durand@mss.test", subject=marker,
                    body="Texte.", draft_uid=uid, source_uid=uid, source_folder="Drafts",
                    keep="1", reply_uid=uid)
    assert saved.status_code == 302, text(saved)[:2000]
    assert marker in text(marie.get(f"/courrier/{box}?dossier=Drafts"))


def test_a_post_past_the_hard_cap_gets_a_clear_page(boxes: dict[str, int],
                                                    as_user: Callable[[str], FlaskClient]) -> None:
    """Past UPLOAD_CAP_FACTOR × the message limit (64 Mo at least) the body is not read: a
    French page that says what happened, not Werkzeug's bare 413."""
    marie = as_user("marie")
    answer = marie.post(f"/courrier/{boxes['marie']}/ecrire", data=b"x" * 100,
                        content_type="multipart/form-data; boundary=x",
                        environ_overrides={"CONTENT_LENGTH": str(200 * 1024 * 1024)})
    page = html.unescape(text(answer))
    assert answer.status_code == 413
    assert "Pièces jointes trop volumineuses" in page and "rien n’a été envoyé" in page
