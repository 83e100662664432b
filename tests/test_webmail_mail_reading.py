"""Reading through Flask's test client on a real Dovecot and gateway: HTML made inert and
framed, remote images on request, IHE XDM packages, MSSanté fields, the read receipt, the
delivery timeline of a sent message, and the directory with its JSON suggestions."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import (
    address,
    box_id,
    clinical_message,
    post_form,
    text,
    wait_until,
)
from trust_space.models import Mailbox

pytest_plugins = ["tests.webmail_mail_fixtures"]
XSS = """<p id="greeting" onmouseover="alert(1)">Bonjour <b>docteur</b></p>
<script>alert('script')</script><img src="x" onerror="alert('img')">
<a id="js" href="javascript:alert('lien')">lien</a><a href="JaVaScRiPt:alert(2)">autre</a>
<div style="background-image: url(https://pistage.example/p.gif); width: expression(alert(3))">
css</div>
<svg onload="alert('svg')"><script>alert('svg script')</script></svg>
<iframe src="https://evil.example/"></iframe>
<form action="https://evil.example/"><input name="x"></form>
<img id="remote" src="https://images.example/logo.png" alt="logo">
<style>body { background: url(https://pistage.example/css.gif) }</style>
<a id="ok" href="https://ans.sante.fr/">lien sûr</a>"""


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul")}


def _newest_uid(client: FlaskClient, box: int, folder: str = "INBOX") -> int:
    page = text(client.get(f"/courrier/{box}?dossier={folder}"))
    return max(int(u) for u in re.findall(r"/message/(\d+)\?dossier=", page))


@pytest.fixture(scope="module")
def clinical(mail_operator: Operator) -> None:
    """Paul → Marie: text + HTML (the XSS corpus) + IHE_XDM.zip, INS, read receipt asked."""
    mail_operator.submit(address("paul"), [address("marie")], clinical_message(
        address("paul"), [address("marie")], "Compte rendu XDM", html=XSS))
    mail_operator.wait_for(address("marie"), lambda r: b"Compte rendu XDM" in r)


def test_html_body_is_sanitised_framed_and_images_on_request(
        clinical: None, boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    uid = _newest_uid(marie, boxes["marie"])
    page = text(marie.get(f"/courrier/{boxes['marie']}/message/{uid}?dossier=INBOX"))
    frame = re.search(r'<iframe class="msg-frame"[^>]*>', page).group(0)  # type: ignore[union-attr]
    assert 'sandbox="allow-same-origin allow-popups' in frame and "allow-scripts" not in frame
    assert "1 image(s) distante(s) non chargée(s)" in page and "Afficher les images" in page
    body = marie.get(f"/courrier/{boxes['marie']}/message/{uid}/corps?dossier=INBOX")
    html = text(body)
    csp = body.headers["Content-Security-Policy"]
    assert "script-src 'none'" in csp and "img-src 'self';" in csp
    assert body.headers["X-Frame-Options"] == "SAMEORIGIN"
    for bad in ("<script", "onerror", "onmouseover", "onload", "javascript:", "<svg", "<iframe",
                "<form", "<style", "expression(", "pistage.example", "images.example"):
        assert bad not in html.lower(), bad
    assert "<b>docteur</b>" in html and 'href="https://ans.sante.fr/"' in html
    assert 'rel="noopener noreferrer nofollow"' in html
    shown = marie.get(f"/courrier/{boxes['marie']}/message/{uid}/corps?dossier=INBOX&images=1")
    assert 'src="https://images.example/logo.png"' in text(shown)
    assert "img-src 'self' https: http:" in shown.headers["Content-Security-Policy"]
    assert "<script" not in text(shown)


def test_xdm_package_and_mss_fields(clinical: None, boxes: dict[str, int],
                                    as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    uid = _newest_uid(marie, boxes["marie"])
    page = text(marie.get(f"/courrier/{boxes['marie']}/message/{uid}?dossier=INBOX"))
    assert "INS du patient" in page and "1840575123456" in page
    assert "Paquet IHE XDM" in page and "Compte rendu de consultation" in page
    assert "IHE_XDM/SUBSET01/DOC0001.PDF" in page and "METADATA.XML" not in page
    link = re.search(r'href="([^"]+/document/\d+[^"]*)"', page).group(1)  # type: ignore[union-attr]
    document = marie.get(link.replace("&amp;", "&"))
    assert document.data == b"%PDF-1.4 compte rendu"
    assert document.headers["Content-Disposition"].startswith(
        'attachment; filename="DOC0001.PDF"')


def test_read_receipt_on_request_and_timeline_of_the_sent_message(
        mail_operator: Operator, clinical: None, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, paul = as_user("marie"), as_user("paul")
    uid = _newest_uid(marie, boxes["marie"])
    url = f"/courrier/{boxes['marie']}/message/{uid}?dossier=INBOX"
    assert "L’expéditeur demande un accusé de lecture" in text(marie.get(url))
    sent = post_form(marie, f"/courrier/{boxes['marie']}/message/{uid}/accuse",
                     {"dossier": "INBOX", "reponse": "envoyer"}, follow_redirects=True)
    assert "Accusé de lecture envoyé." in text(sent)
    assert "demande un accusé de lecture" not in text(marie.get(url))  # $MDNSent
    mdn = mail_operator.wait_for(address("paul"), lambda r: b"displayed" in r)
    report = email.message_from_bytes(mdn, policy=email.policy.default)
    assert report.get_content_type() in ("multipart/signed", "multipart/report")
    # Paul's Sent copy of the message he submitted (through the gateway, password login):
    wait_until(lambda: "Compte rendu XDM" in text(paul.get(f"/courrier/{boxes['paul']}"
                                                           "?dossier=Sent")))
    sent_uid = _newest_uid(paul, boxes["paul"], "Sent")
    page = text(paul.get(f"/courrier/{boxes['paul']}/message/{sent_uid}?dossier=Sent"))
    assert "Suivi de la remise" in page and "marie.martin@mss.test" in page
    assert "Remis" in page and "Accusé de réception reçu" in page
    assert "Pris en charge par la passerelle" in page


def test_timeline_is_not_shown_to_another_mailbox(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    """A draft carrying the Message-ID of Paul's message gives Marie no timeline."""
    paul, marie = as_user("paul"), as_user("marie")
    sent_uid = _newest_uid(paul, boxes["paul"], "Sent")
    raw = mail_operator.messages(address("paul"), "Sent")[-1]
    message_id = email.message_from_bytes(raw)["Message-ID"]
    forged = (f"From: marie.martin@mss.test\r\nTo: x@mss.test\r\nSubject: copie\r\n"
              f"Message-ID: {message_id}\r\n\r\ncopie\r\n").encode()
    conn = mail_operator.imap(address("marie"))
    conn.append("Sent", None, None, forged)
    conn.logout()
    uid = _newest_uid(marie, boxes["marie"], "Sent")
    page = text(marie.get(f"/courrier/{boxes['marie']}/message/{uid}?dossier=Sent"))
    assert "Aucune trace de remise" in page and "Remis" not in page
    assert "Non vérifié par la passerelle" in page
    del sent_uid


def test_forged_verdict_is_not_trusted(mail_operator: Operator, boxes: dict[str, int],
                                       as_user: Callable[[str], FlaskClient]) -> None:
    """A message placed by IMAP with our authserv-id claiming a pass is shown as a warning."""
    forged = (b"Authentication-Results: mss.test; smime=pass (encrypted) "
              b"body.smime-identity=paul.durand@mss.test\r\nFrom: paul.durand@mss.test\r\n"
              b"To: marie.martin@mss.test\r\nSubject: Faux\r\n\r\nfaux\r\n")
    conn = mail_operator.imap(address("marie"))
    conn.append("INBOX", None, None, forged)
    conn.logout()
    marie = as_user("marie")
    uid = _newest_uid(marie, boxes["marie"])
    page = text(marie.get(f"/courrier/{boxes['marie']}/message/{uid}?dossier=INBOX"))
    assert "Signature annoncée mais non confirmée" in page and "badge-warn" in page


def test_directory_search_write_and_suggestions(
        mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    with mail_web.space.db.transaction() as session:
        session.execute(update(Mailbox).where(Mailbox.address == address("leo"))
                        .values(liste_rouge=True))
    paul = as_user("paul")
    page = text(paul.get("/annuaire?nom=martin"))
    assert "marie.martin@mss.test" in page and "Écrire" in page
    assert re.search(r"/courrier/ecrire\?a=marie.martin(@|%40)mss.test", page)
    assert "leo.faure" not in text(paul.get("/annuaire?nom=faure"))  # liste rouge
    assert "marie.martin@mss.test" in text(paul.get("/annuaire?rpps=10000000001"))
    assert "marie.martin@mss.test" in text(paul.get("/annuaire?profession=medecin"))
    suggestions = paul.get("/annuaire/suggestions?q=mar").get_json()
    assert any(s["address"] == "marie.martin@mss.test" for s in suggestions)
    assert paul.get("/annuaire/suggestions?q=faure").get_json() == []
    write = paul.get("/courrier/ecrire?a=marie.martin@mss.test", follow_redirects=True)
    assert 'value="marie.martin@mss.test"' in text(write)


def test_message_list_pages_newest_first(mail_operator: Operator, mail_web: Web,
                                         as_user: Callable[[str], FlaskClient]) -> None:
    conn = mail_operator.imap(address("julie"))
    for day in range(1, 56):
        when = email.utils.format_datetime(datetime(2025, 1, 1, 10, tzinfo=UTC)
                                           + timedelta(days=day))
        conn.append("INBOX", None, None, (
            f"From: paul.durand@mss.test\r\nTo: julie.bernard@mss.test\r\n"
            f"Subject: Message {day:02d}\r\nDate: {when}\r\n\r\ntexte\r\n").encode())
    conn.logout()
    julie = as_user("julie")
    box = box_id(mail_web, address("julie"))
    first = text(julie.get(f"/courrier/{box}"))
    assert "Page 1 sur 2" in first and first.index("Message 55") < first.index("Message 54")
    assert "Message 05" not in first
    second = text(julie.get(f"/courrier/{box}?page=2"))
    assert "Message 05" in second and "Message 01" in second and "Message 55" not in second
    marked = post_form(julie, f"/courrier/{box}/marquer",
                       {"dossier": "INBOX", "uid": ["1", "2"], "etat": "lu"})
    assert marked.status_code == 302
    assert text(julie.get(f"/courrier/{box}?page=2")).count('<tr class="unread"') == 3
    # The sort order kept for paging follows a new arrival (and an expunge).
    conn = mail_operator.imap(address("julie"))
    conn.append("INBOX", None, None, b"From: paul.durand@mss.test\r\nSubject: Message 99\r\n"
                b"Date: Mon, 1 Jun 2026 10:00:00 +0200\r\n\r\ntexte\r\n")
    conn.select("INBOX")
    conn.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    conn.logout()
    first = text(julie.get(f"/courrier/{box}"))
    assert first.index("Message 99") < first.index("Message 55")
    assert "Message 01" not in text(julie.get(f"/courrier/{box}?page=2"))
