"""A message's ways out besides its read view, through Flask's test client on a real Dovecot:
inline previews judged on the bytes (PNG and PDF shown; a JPEG named .pdf, an SVG, an HTML
page, a PDF with JavaScript never inline), « Tout télécharger » as a ZIP (names made safe and
unique, ``../../x`` inside, the size bound), the .eml, the source and header pages (escaped,
bounded), the print page, what they say of an encrypted message, and the attacker's requests
(another user's box or UID, a part out of range, CSRF is not needed for a GET that changes
nothing but every read is audited)."""

from __future__ import annotations

import html
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from certs import smime
from core.audit import AuditRecord
from gateway.accept import opening
from mailformat import authresults
from tests.gateway_fixtures import Operator
from tests.reading_support import HTML_ATTACHMENT, SVG_ATTACHMENT, append, message, pdf, png
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, text
from webmail.mail import exports, mime, preview

pytest_plugins = ["tests.webmail_mail_fixtures"]
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
SUBJECT = 'Résultats <script>alert("sujet")</script> / "urgent"'


@pytest.fixture(scope="module")
def stored(mail_operator: Operator) -> Iterator[dict[str, int]]:
    """Marie's INBOX: a message with every kind of attachment, one past the source bound, an
    encrypted one the gateway opened, and an envelope it could not."""
    conn = mail_operator.imap(address("marie"))
    paul, marie = address("paul"), address("marie")
    attachments = [
        ("radio thorax.png", "image/png", png()),
        ("compte rendu.pdf", "application/pdf", pdf()),
        ("photo.pdf", "application/pdf", JPEG),  # a JPEG named and declared as a PDF
        ("schema.svg", "image/svg+xml", SVG_ATTACHMENT.encode()),
        ("page.html", "text/html", HTML_ATTACHMENT.encode()),
        ("formulaire.pdf", "application/pdf", pdf(javascript="app.alert('PIRATE');")),
        ("../../x", "text/plain", b"traversal"),
        ("Compte rendu.PDF", "application/pdf", pdf("Second")),
        ("compte rendu.pdf", "application/pdf", pdf("Troisieme")),
        ("résumé été.txt", "text/plain", "accentué".encode()),
    ]
    found = {"all": append(conn, message(paul, marie, SUBJECT, "Voir les pièces jointes.\n",
                                          attachments=attachments))}
    big = "Ligne de compte rendu <script>alert('source')</script> répétée.\n" * 12_000
    found["big"] = append(conn, message(paul, marie, "Long compte rendu", big))
    found["encrypted"] = append(conn, _opened_by_the_gateway(mail_operator, paul, marie))
    found["envelope"] = append(conn, _envelope(mail_operator, paul, marie))
    conn.logout()
    yield found


def _opened_by_the_gateway(op: Operator, sender: str, to: str) -> bytes:
    """What the gateway stores of a message that arrived encrypted: the opened content,
    stamped and sealed by the gateway's own functions (gateway.accept.opening,
    mailformat.authresults)."""
    raw = message(sender, to, "Reçu chiffré", "Contenu déchiffré par la passerelle.\n")
    verdict = opening.Verdict("none", None, True, "non signe", None)
    stamped = opening.stamp(raw, verdict, "mss.test")
    return authresults.seal(stamped, authresults.key_for(op.settings), datetime.now(UTC))


def _envelope(op: Operator, sender: str, to: str) -> bytes:
    """An S/MIME envelope for a certificate that is not the mailbox's: left closed."""
    from cryptography import x509

    ca = x509.load_pem_x509_certificate((op.settings.pki_dir / "ca.pem").read_bytes())
    inner = message(sender, to, "Enveloppe", "Secret.\n")
    sealed = smime.encrypt(inner, [ca])
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = sender, to, "Enveloppe fermée"
    body = sealed.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in sealed else sealed
    outer.set_content(body, maintype="application", subtype="pkcs7-mime",
                      params={"smime-type": "enveloped-data"}, filename="smime.p7m")
    return outer.as_bytes()


@pytest.fixture
def marie(as_user: Callable[[str], FlaskClient]) -> FlaskClient:
    return as_user("marie")


def _url(web: Web, uid: int, tail: str = "") -> str:
    return f"/courrier/{box_id(web, address('marie'))}/message/{uid}{tail}?dossier=INBOX"


def _parts(marie: FlaskClient, web: Web, uid: int) -> dict[str, int]:
    raw = _raw(marie, web, uid)
    return {p.filename: p.index for p in mime.read(raw).attachments}


def _raw(marie: FlaskClient, web: Web, uid: int) -> bytes:
    return bytes(marie.get(_url(web, uid, "/eml")).data)


def _last_audit(web: Web, action: str) -> tuple[str, dict[str, object]]:
    with web.space.db.transaction() as session:
        row = session.scalars(select(AuditRecord).where(AuditRecord.action == action)
                              .order_by(AuditRecord.id.desc())).first()
        assert row is not None
        return row.outcome, json.loads(row.request)


def test_the_read_view_offers_previews_only_for_proven_files(
        stored: dict[str, int], mail_web: Web, marie: FlaskClient) -> None:
    page = text(marie.get(_url(mail_web, stored["all"])))
    parts = _parts(marie, mail_web, stored["all"])
    previewed = {name for name, index in parts.items() if f"/piece/{index}/apercu" in page}
    assert previewed == {"radio thorax.png", "compte rendu.pdf", "Compte rendu.PDF"}
    assert f'/piece/{parts["radio thorax.png"]}/apercu?dossier=INBOX" alt="Aperçu' in page
    assert page.count('class="pdf-frame"') == 3 and "sandbox=" not in page.split(
        'class="pdf-frame"')[1].split(">")[0]
    assert "Tout télécharger (.zip)" in page
    # Why a would-be image or PDF is not shown, in French, beside it.
    assert "le contenu du fichier n’est pas celui qu’il annonce" in page  # photo.pdf
    assert "Image SVG : jamais affichée dans la page" in page
    assert "ce PDF contient du JavaScript ou des actions automatiques" in page
    assert "&lt;script&gt;" in page and '<script>alert("sujet")' not in page


@pytest.mark.parametrize("name, shown_as", [("radio thorax.png", "image/png"),
                                            ("compte rendu.pdf", "application/pdf")])
def test_a_proven_file_is_served_inline_in_a_sandbox(
        stored: dict[str, int], mail_web: Web, marie: FlaskClient, name: str,
        shown_as: str) -> None:
    index = _parts(marie, mail_web, stored["all"])[name]
    answer = marie.get(_url(mail_web, stored["all"], f"/piece/{index}/apercu"))
    assert answer.status_code == 200 and answer.mimetype == shown_as
    assert answer.headers["Content-Disposition"].startswith("inline;")
    csp = answer.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp
    assert "frame-ancestors 'self'" in csp and "script-src" not in csp
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert answer.headers["Cache-Control"] == "no-store"
    outcome, details = _last_audit(mail_web, "mail.download")
    assert (outcome, details["part"], details["inline"]) == ("ok", index, True)


@pytest.mark.parametrize("name", ["photo.pdf", "schema.svg", "page.html", "formulaire.pdf"])
def test_anything_else_is_a_download_never_inline(
        stored: dict[str, int], mail_web: Web, marie: FlaskClient, name: str) -> None:
    index = _parts(marie, mail_web, stored["all"])[name]
    for tail in (f"/piece/{index}/apercu", f"/piece/{index}"):
        answer = marie.get(_url(mail_web, stored["all"], tail))
        assert answer.status_code == 200
        assert answer.headers["Content-Disposition"].startswith("attachment;")
        assert answer.mimetype in ("application/octet-stream", "application/pdf")
        assert answer.mimetype not in ("text/html", "image/svg+xml")
        assert answer.headers["Content-Security-Policy"].startswith("sandbox")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_judgement_itself() -> None:
    assert preview.inline_type("application/pdf", "cr.pdf", pdf()) == "application/pdf"
    assert preview.inline_type("application/octet-stream", "radio.PNG", png()) == "image/png"
    assert preview.inline_type("application/pdf", "photo.pdf", JPEG) is None
    assert preview.inline_type("image/jpeg", "photo.pdf", JPEG) is None  # name disagrees
    assert preview.inline_type("image/png", "radio.png", JPEG) is None  # bytes disagree
    assert preview.inline_type("image/svg+xml", "a.svg", SVG_ATTACHMENT.encode()) is None
    assert preview.inline_type("image/png", "a.svg", png()) is None
    assert preview.inline_type("text/html", "a.png", png()) is None
    assert preview.pdf_active(pdf(javascript="app.alert(1)"))
    hidden = pdf().replace(b"/Type /Catalog", b"/Type /Catalog /OpenAction << /S /J#61vaScript"
                           b" /J#53 (app.alert(1)) >>")
    assert preview.pdf_active(hidden)  # names written with #xx escapes
    import zlib
    objstm = (b"%PDF-1.5\n1 0 obj\n<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\n"
              b"stream\n" + zlib.compress(b"2 0 << /S /JavaScript /JS (x) >>")
              + b"\nendstream\nendobj\n%%EOF\n")
    assert preview.pdf_active(objstm)  # inside a compressed object stream
    assert not preview.pdf_active(objstm.replace(
        zlib.compress(b"2 0 << /S /JavaScript /JS (x) >>"), zlib.compress(b"2 0 << >>")))
    assert preview.pdf_active(objstm.replace(b"/FlateDecode", b"/LZWDecode"))  # unreadable


def test_everything_as_one_zip(stored: dict[str, int], mail_web: Web,
                               marie: FlaskClient) -> None:
    answer = marie.get(_url(mail_web, stored["all"], "/pieces-jointes.zip"))
    assert answer.status_code == 200 and answer.mimetype == "application/zip"
    assert answer.is_streamed
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and disposition.endswith(".zip")
    assert "filename*=UTF-8''R%C3%A9sultats%20_script_alert" in disposition
    assert "urgent" in disposition and "<" not in disposition
    archive = zipfile.ZipFile(io.BytesIO(answer.data))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names == ["radio thorax.png", "compte rendu.pdf", "photo.pdf", "schema.svg",
                     "page.html", "formulaire.pdf", "x", "Compte rendu (2).PDF",
                     "compte rendu (3).pdf", "résumé été.txt"]
    for info in archive.infolist():  # nothing can land outside the extraction folder
        assert "/" not in info.filename and "\\" not in info.filename
        assert info.filename not in (".", "..") and not info.filename.startswith(".")
        assert bool(info.flag_bits & 0x800) == (not info.filename.isascii())
    assert archive.read("x") == b"traversal"
    assert archive.read("radio thorax.png") == png()
    assert archive.read("compte rendu (3).pdf") == pdf("Troisieme")
    assert archive.read("résumé été.txt") == "accentué".encode()
    outcome, details = _last_audit(mail_web, "mail.download")
    assert (outcome, details["part"], details["count"]) == ("ok", "zip", 10)


def test_the_zip_is_bounded(stored: dict[str, int], mail_web: Web,
                            marie: FlaskClient) -> None:
    mail_web.app.config["MAIL_ZIP_MAX_BYTES"] = 3000  # the PDFs and the PNG are more
    try:
        answer = marie.get(_url(mail_web, stored["all"], "/pieces-jointes.zip"))
    finally:
        mail_web.app.config.pop("MAIL_ZIP_MAX_BYTES")
    assert answer.status_code == 413
    assert "téléchargez-les une par une" in text(answer) and "Traceback" not in text(answer)
    assert _last_audit(mail_web, "mail.download")[0] == "too_large"
    none = marie.get(_url(mail_web, stored["big"], "/pieces-jointes.zip"))
    assert none.status_code == 404 and "pas de pièce jointe" in text(none)


def test_the_eml_is_the_stored_message(stored: dict[str, int], mail_web: Web,
                                       mail_operator: Operator, marie: FlaskClient) -> None:
    answer = marie.get(_url(mail_web, stored["all"], "/eml"))
    assert answer.mimetype == "message/rfc822"
    disposition = answer.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and disposition.endswith('.eml')
    assert "<" not in disposition and '\\"' not in disposition
    conn = mail_operator.imap(address("marie"))
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("FETCH", str(stored["all"]), "(BODY.PEEK[])")
    conn.logout()
    assert answer.data == data[0][1]  # type: ignore[index]
    assert _last_audit(mail_web, "mail.download")[1]["part"] == "eml"


def test_source_and_headers_are_escaped_and_bounded(stored: dict[str, int], mail_web: Web,
                                                    marie: FlaskClient) -> None:
    source = text(marie.get(_url(mail_web, stored["big"], "/source")))
    assert "&lt;script&gt;alert(&#39;source&#39;)&lt;/script&gt;" in source
    assert "<script>alert('source')" not in source
    assert "Affichage limité" in source and "/eml?dossier=INBOX" in source
    shown = source.split('<pre class="raw-text"', 1)[1].split(">", 1)[1].split("</pre>", 1)[0]
    assert len(html.unescape(shown)) == exports.SOURCE_MAX  # cut there
    headers = text(marie.get(_url(mail_web, stored["all"], "/en-tetes")))
    assert "Subject: =?utf-8?" in headers and "Message-ID: &lt;" in headers
    assert "Voir les pièces jointes" not in headers  # the header section only
    assert "Affichage limité" not in headers
    assert _last_audit(mail_web, "mail.read")[1]["view"] == "headers"


def test_the_print_page(stored: dict[str, int], mail_web: Web, marie: FlaskClient) -> None:
    page = text(marie.get(_url(mail_web, stored["all"], "/impression")))
    assert 'class="topbar"' not in page and "mail-side" not in page
    assert "Voir les pièces jointes." in page and "radio thorax.png" in page
    assert "&lt;script&gt;" in page and '<script>alert("sujet")' not in page
    assert '<script type="module" src="/static/js/print.js"></script>' in page
    assert "Imprimé le" in page and "Marie" in page
    assert _last_audit(mail_web, "mail.read")[1]["view"] == "print"


def test_encrypted_messages_say_what_is_stored(stored: dict[str, int], mail_web: Web,
                                               marie: FlaskClient) -> None:
    for tail in ("/source", "/en-tetes", "/impression"):
        page = text(marie.get(_url(mail_web, stored["encrypted"], tail)))
        assert "version déchiffrée" in page, tail
        closed = text(marie.get(_url(mail_web, stored["envelope"], tail)))
        assert "conservé chiffré" in closed, tail
    plain = text(marie.get(_url(mail_web, stored["all"], "/source")))
    assert "déchiffr" not in plain
    eml = marie.get(_url(mail_web, stored["encrypted"], "/eml")).data
    assert b"smime=none (encrypted)" in eml and b"Contenu d" in eml


def test_the_attackers_requests(stored: dict[str, int], mail_web: Web,
                                as_user: Callable[[str], FlaskClient]) -> None:
    paul = as_user("paul")
    marie_box, paul_box = box_id(mail_web, address("marie")), box_id(mail_web, address("paul"))
    uid = stored["all"]
    for tail in ("/piece/1/apercu", "/pieces-jointes.zip", "/eml", "/source", "/en-tetes",
                 "/impression"):
        assert paul.get(f"/courrier/{marie_box}/message/{uid}{tail}").status_code == 404
        # His own box with her UID: his IMAP session holds no such message of hers.
        answer = paul.get(f"/courrier/{paul_box}/message/{uid}{tail}")
        assert answer.status_code == 404 and b"Voir les pi" not in answer.data
    outcome, details = _last_audit(mail_web, "mail.access")
    assert (outcome, details["box_id"]) == ("not_found", marie_box)
    marie = as_user("marie")
    for index in (999, 0):  # out of range; the multipart root is no part
        assert marie.get(_url(mail_web, uid, f"/piece/{index}/apercu")).status_code == 404
    assert marie.get(f"/courrier/{marie_box}/message/{uid}/piece/-1/apercu").status_code == 404
    assert marie.get(f"/courrier/{marie_box}/message/{uid}/source?dossier=../../etc"
                     ).status_code == 404
