"""Pure logic of the mail views (no server): the HTML sanitiser against an XSS corpus, the
security verdict of ``Authentication-Results``, the list parser, MIME reading, attachment
names and XDM packages, recipients and the "pièce jointe" reminder, roles and folder names."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailformat import authresults, headers
from mailstore.listing import _parse, sender_label
from tests.webmail_mail_helpers import clinical_message, xdm_zip
from trust_space.models import Role
from webmail.mail import mime, size_fr
from webmail.mail.access import Right, rights_of, valid_folder
from webmail.mail.attachments import safe_filename, xdm_documents, xdm_member
from webmail.mail.badge import Voucher, verdict_of
from webmail.mail.drafting import (
    Attachment,
    Outgoing,
    build,
    mentions_attachment,
    prefixed,
    security_field,
    split_addresses,
)
from webmail.mail.receipts import build_mdn
from webmail.mail.sanitise import frame_csp, sanitise

CORPUS = [
    ("<script>alert(1)</script>", "alert"),
    ('<img src=x onerror="alert(1)">', "onerror"),
    ('<body onload="alert(1)">', "onload"),
    ('<a href="javascript:alert(1)">x</a>', "javascript"),
    ('<a href=" jAvAsCrIpT:alert(1)">x</a>', "javascript"),
    ('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>', "data:"),
    ('<a href="vbscript:msgbox(1)">x</a>', "vbscript"),
    ('<div style="width:expression(alert(1))">x</div>', "expression"),
    ('<div style="background:url(javascript:alert(1))">x</div>', "url("),
    ('<p style="-moz-binding:url(x.xml#xss)">x</p>', "binding"),
    ('<svg><script>alert(1)</script></svg>', "script"),
    ('<svg onload=alert(1)>', "svg"),
    ('<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>', "onerror"),
    ('<iframe src="https://evil.example"></iframe>', "iframe"),
    ('<object data="x.swf"></object><embed src="x.swf">', "swf"),
    ('<form action="https://evil.example"><button>go</button></form>', "form"),
    ('<meta http-equiv="refresh" content="0;url=https://evil.example">', "refresh"),
    ('<base href="https://evil.example/">', "base"),
    ('<link rel="stylesheet" href="https://evil.example/x.css">', "stylesheet"),
    ('<style>@import url(https://evil.example/x.css)</style>', "import"),
    ('<img src="https://pistage.example/p.gif">', "pistage"),
    ('<table background="https://pistage.example/t.gif"><tr><td>x</td></tr></table>',
     "pistage"),
    ('<a href="https://ok.example" onclick="alert(1)" class="btn-primary">x</a>', "onclick"),
    ("<!--<img src=x onerror=alert(1)>-->", "onerror"),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', "onerror"),
]


@pytest.mark.parametrize(("html", "marker"), CORPUS)
def test_xss_corpus_is_inert(html: str, marker: str) -> None:
    clean = sanitise(html, show_images=False, cid_url=lambda _cid: None).html.lower()
    assert marker.lower() not in clean
    assert not re.search(r"\son\w+\s*=", clean)  # no event handler attribute
    for dangerous in ("<script", "javascript:", "<iframe", "<svg", "<style", "<form", "<meta",
                      "<base", "<link", "<object", "<embed", "class="):
        assert dangerous not in clean


def test_sanitiser_keeps_presentation_links_and_cid_images() -> None:
    html = ('<p style="color: red; position: fixed">Bonjour <b>docteur</b></p>'
            '<a href="https://ans.sante.fr/">ANS</a><img src="cid:logo@x" alt="logo">'
            '<img src="https://images.example/a.png">')
    clean = sanitise(html, show_images=False,
                     cid_url=lambda cid: "https://webmail/piece/4" if cid == "logo@x" else None)
    assert '<p style="color:red">' in clean.html and "<b>docteur</b>" in clean.html
    assert 'href="https://ans.sante.fr/"' in clean.html and 'target="_blank"' in clean.html
    assert 'src="https://webmail/piece/4"' in clean.html and clean.blocked_images == 1
    shown = sanitise(html, show_images=True, cid_url=lambda _c: None)
    assert 'src="https://images.example/a.png"' in shown.html and shown.blocked_images == 0
    assert "script-src 'none'" in frame_csp(False) and "https:" not in frame_csp(False)
    assert "img-src 'self' https: http:" in frame_csp(True)


@pytest.mark.parametrize(("values", "result", "encrypted", "signer"), [
    (["mss.test; smime=pass (encrypted) reason=\"ok\" body.smime-identity=a@mss.test"],
     "pass", True, "a@mss.test"),
    (["other.example; smime=pass", "mss.test; smime=fail (not encrypted) reason=\"bad\""],
     "fail", False, None),
    (["mss.test.; smime=none (not encrypted)", "mss.test; smime=pass"], "none", False, None),
    (["(comment) \"mss.test\"; smime=temperror"], "temperror", None, None),
    (["evil.example; smime=pass (encrypted)"], "absent", None, None),
    ([], "absent", None, None),
])
def test_only_the_first_verdict_with_our_authserv_id_counts(
        values: list[str], result: str, encrypted: bool | None, signer: str | None) -> None:
    verdict = verdict_of(values, "mss.test")
    assert (verdict.result, verdict.encrypted, verdict.signer) == (result, encrypted, signer)


KEY = authresults.seal_key(b"secret de test")


def test_list_parser_reads_markers_from_one_fetch() -> None:
    header = authresults.seal(
        b"Authentication-Results: mss.test; smime=pass (encrypted)\r\n"
        b"Date: Mon, 10 Nov 2025 10:00:00 +0100\r\nFrom: =?utf-8?q?Ren=C3=A9?= "
        b"<r@mss.test>\r\nTo: a@mss.test\r\nSubject: Essai\r\n\r\n", KEY, datetime.now(UTC))
    data = [(b'7 (UID 42 FLAGS (\\Seen) RFC822.SIZE 1234 BODYSTRUCTURE ((("text" "plain" NIL '
             b'NIL NIL "7bit" 1 1 NIL NIL NIL NIL)("application" "pdf" NIL NIL NIL "base64" 8 '
             b'NIL ("attachment" ("filename" {5}', b"a.pdf"),
            (b')) NIL NIL) "mixed" NIL NIL NIL NIL)("application" "pkcs7-signature" NIL NIL NIL'
             b' "base64" 9 NIL ("attachment" ("filename" "smime.p7s")) NIL NIL) "signed" NIL '
             b'NIL NIL NIL) BODY[HEADER.FIELDS (DATE FROM)] {%d}' % len(header), header), b")",
            (b'8 (UID 43 FLAGS () RFC822.SIZE 10 BODYSTRUCTURE ("text" "plain" NIL NIL NIL '
             b'"7bit" 1 1 NIL NIL NIL NIL) BODY[HEADER.FIELDS (DATE)] {4}', b"\r\n\r\n"), b")"]
    first, second = list(_parse(data, Voucher("mss.test", KEY)))
    assert (first.uid, first.seen, first.size, first.attachment) == (42, True, 1234, True)
    assert (first.security, first.encrypted, first.sender_name) == ("pass", True, "René")
    assert (second.uid, second.seen, second.attachment, second.security) == \
        (43, False, False, "absent")


def _one_row(header: bytes, key: bytes = KEY) -> object:
    data = [(b"1 (UID 9 FLAGS () RFC822.SIZE 10 BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL "
             b"\"7bit\" 1 1 NIL NIL NIL NIL) BODY[HEADER.FIELDS (FROM)] {%d}" % len(header),
             header), b")"]
    return list(_parse(data, Voucher("mss.test", key)))[0]


SEALED = (b"Authentication-Results: mss.test; smime=pass (not encrypted)\r\n"
          b"From: paul.durand@mss.test\r\nSubject: Bilan\r\nDate: Mon, 10 Nov 2025 10:00:00 "
          b"+0100\r\nMessage-ID: <a@mss.test>\r\n\r\n")


def test_a_verdict_counts_only_under_the_gateway_seal() -> None:
    """Attack (issue #14 item 7): an IMAP APPEND can write our Authentication-Results; the
    list shows "signé" only for the gateway's sealed field, and not once a listed field
    (From, Subject, Date) was edited under it, nor under another operator's key."""
    sealed = authresults.seal(SEALED, KEY, datetime.now(UTC))
    assert _one_row(sealed).security == "pass"  # type: ignore[attr-defined]
    assert _one_row(SEALED).security == "forged"  # type: ignore[attr-defined]
    assert _one_row(sealed, authresults.seal_key(b"autre")).security == "forged"  # type: ignore[attr-defined]
    for old, new in ((b"paul.durand", b"jean.dupont"), (b"Bilan", b"Bilon"),
                     (b"10 Nov", b"11 Nov")):
        assert _one_row(sealed.replace(old, new, 1)).security == "forged"  # type: ignore[attr-defined]
    moved = sealed.replace(b"Subject: Bilan\r\n", b"")  # a field dropped under the seal
    assert _one_row(moved).security == "forged"  # type: ignore[attr-defined]
    bare_cr = sealed.replace(b"Subject: Bilan\r\n", b"Subject: Bilan\rFrom: x@mss.test\r\n")
    assert _one_row(bare_cr).security == "forged"  # type: ignore[attr-defined]
    assert _one_row(b"From: x@mss.test\r\n\r\n").security == "absent"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "address", "shown"), [
    ("Paul Durand <paul.durand@mss.test>", "marie.martin@mss.test", "marie.martin@mss.test"),
    ("paul.durand@mss.test", "marie.martin@mss.test", "marie.martin@mss.test"),
    ("Paul Durand", "marie.martin@mss.test", "Paul Durand <marie.martin@mss.test>"),
    ("MARIE  Martin", "marie.martin@mss.test", "MARIE  Martin"),
    ("Marie Martin", "inconnu@autre.test", "Marie Martin"),
    ("", "marie.martin@mss.test", "marie.martin@mss.test"),
])
def test_sender_label_shows_the_real_address_when_the_name_misleads(
        name: str, address: str, shown: str) -> None:
    directory = {"marie.martin@mss.test": "Marie Martin"}
    assert sender_label(name, address, directory) == shown


@pytest.mark.parametrize("head", [
    b"Subject: hi\rFrom: Paul Durand <paul.durand@mss.test>\r\nFrom: m@mss.test\r\n",
    b"Subject: hi\r\nFrom: a@mss.test\nTo: b@mss.test\r\n",
    b"From: a@mss.test\r\nFrom: b@mss.test\r\n",
    b"From: a@mss.test\r\nSUBJECT: x\r\nSubject: y\r\n",
    b"From: a@mss.test\r\nContent-Type: text/plain\r\nContent-type: application/pkcs7-mime\r\n",
    b"From: a@mss.test\r\nnot a field\r\n",
    b"From : a@mss.test\r\n",
    b" folded: first\r\nFrom: a@mss.test\r\n",
    b"From: a@mss.test\r\nX: \x00\r\n",
    b"From: a@mss.test\r\nSubject: x\r\r\n",
])
def test_header_check_refuses_what_readers_would_read_differently(head: bytes) -> None:
    with pytest.raises(headers.HeaderError) as refused:
        headers.check(head + b"\r\nbody\r\n")
    assert " / " in refused.value.message  # French / English
    assert headers.parse(head).defects


@pytest.mark.parametrize("head", [
    b"From: a@mss.test\r\nSubject: one\r\n two\r\nReceived: x\r\nReceived: y\r\n",
    b"From: a@mss.test\nSubject: all LF\n",
    b"From: =?utf-8?q?Ren=C3=A9?= <r@mss.test>\r\nSubject: \xc3\xa9t\xc3\xa9\r\n",
])
def test_header_check_keeps_well_formed_sections(head: bytes) -> None:
    eol = b"\n" if b"\r" not in head else b"\r\n"
    assert len(headers.check(head + eol + b"body")) >= 2
    assert not headers.parse(head).defects


def test_reading_a_signed_message_with_attachments() -> None:
    inner = mime.parse(clinical_message("paul.durand@mss.test", ["marie.martin@mss.test"],
                                        "CR", html="<p>x</p>"))
    for name in ("From", "To", "Subject", "Date", "Message-ID", "X-MSS-INS",
                 "Disposition-Notification-To", "MIME-Version"):
        del inner[name]
    signed = (b"From: paul.durand@mss.test\r\nSubject: CR\r\nMIME-Version: 1.0\r\n"
              b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
              b'boundary="S"\r\n\r\n--S\r\n' + inner.as_bytes() + b"\r\n--S\r\n"
              b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
              b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\nAAAA\r\n--S--\r\n")
    reading = mime.read(signed)
    assert reading.text is not None and "compte rendu" in reading.text
    assert reading.html_index is not None
    assert [p.filename for p in reading.attachments] == ["IHE_XDM.zip"]
    assert reading.attachments[0].is_xdm
    part = mime.part_at(reading.message, reading.attachments[0].index)
    assert mime.part_bytes(part) == xdm_zip()


def test_xdm_listing_and_member() -> None:
    docs = xdm_documents(xdm_zip())
    assert [(d.path, d.title, d.mime_type) for d in docs] == [
        ("IHE_XDM/SUBSET01/DOC0001.PDF", "Compte rendu de consultation", "application/pdf")]
    assert xdm_member(xdm_zip(), docs[0].index) == ("IHE_XDM/SUBSET01/DOC0001.PDF",
                                                     b"%PDF-1.4 compte rendu")
    assert xdm_documents(b"pas un zip") == [] and xdm_member(xdm_zip(), 99) is None


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd"), ("C:\\Windows\\evil.exe", "evil.exe"),
    ('a"b;c\r\nd.pdf', "a_b_c_d.pdf"), (".htaccess", "htaccess"), ("", "piece-jointe.bin"),
    ("compte rendu é.pdf", "compte rendu é.pdf"), ("x" * 300 + ".pdf", "x" * 140 + ".pdf"),
])
def test_safe_filenames(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_recipients_and_reminder() -> None:
    good, bad = split_addresses("Marie <Marie.Martin@mss.test>; paul.durand@mss.test,\n"
                                "pas-une-adresse, a b@c.fr")
    assert good == ["marie.martin@mss.test", "paul.durand@mss.test"]
    assert bad == ["pas-une-adresse", "a b@c.fr"]
    assert mentions_attachment("Voir la pièce jointe.") and mentions_attachment("Ci-joint")
    assert mentions_attachment("en PJ le bilan") and not mentions_attachment("Bonjour")
    assert not mentions_attachment("Merci.\n> voir pièces jointes")
    assert prefixed("RE : Bilan", "RE") == "RE : Bilan" and prefixed("Bilan", "TR") == "TR : Bilan"
    assert security_field(True, False) == "sign" and security_field(False, False) == "none"


def test_built_message_carries_the_security_request_and_attachments() -> None:
    raw, message_id = build(Outgoing(
        "marie.martin@mss.test", "Marie Martin", ["paul.durand@mss.test"], [], "Objet é",
        "Texte é", True, True, True, attachments=[Attachment("a.pdf", "application/pdf",
                                                            b"%PDF")]), domain="mss.test")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["MSS-Security"] == "sign, encrypt" and parsed["Message-ID"] == message_id
    assert parsed["Disposition-Notification-To"] == "marie.martin@mss.test"
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.pdf"]


def test_mdn_is_a_displayed_report() -> None:
    raw = build_mdn(mailbox="paul.durand@mss.test", mailbox_name="Paul Durand",
                    to="marie.martin@mss.test", original_id="<a@b>", original_subject="Sujet",
                    hostname="localhost", domain="mss.test")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert b"Disposition: manual-action/MDN-sent-manually; displayed" in raw
    assert b"Original-Message-ID: <a@b>" in raw


def test_rights_follow_the_roles() -> None:
    assert rights_of(None) == frozenset(Right)
    assert rights_of(Role.ADMINISTRATOR) == frozenset(Right)
    assert rights_of(Role.MANAGER) == frozenset(Right)
    assert rights_of(Role.USER) == {Right.READ, Right.FLAG, Right.DRAFT, Right.SEND}


@pytest.mark.parametrize(("name", "ok"), [
    ("INBOX", True), ("Sent", True), ("Patients/2026", True), ("Dossier é", True),
    ("shared/pharma.ducentre.64000@mss.test/INBOX", False), ("shared", False), ("/INBOX", False),
    ("a//b", False), ("a/", False), ("*", False), ("a%", False), ("../x", False),
    ("a/./b", False), ("", False), ("a\x00b", False), ("a\\b", False), ('a"b', True),
    ("x" * 201, False),
])
def test_folder_names(name: str, ok: bool) -> None:
    assert valid_folder(name) is ok


def test_sizes_in_french() -> None:
    assert [size_fr(n) for n in (12, 5700, 3 * 1024 * 1024)] == ["12 octets", "5,6 ko", "3,0 Mo"]


@pytest.mark.parametrize(("line", "code", "enhanced", "text"), [
    ("451 4.4.1 Relais injoignable", 451, "4.4.1", "Relais injoignable"),
    ("5.7.1 Refus / refused", None, "5.7.1", "Refus / refused"),
    ("250 ok", 250, "", "ok"),
    ("Avis non transmis", None, "", "Avis non transmis"),
    ("", None, "", ""),
    ("999 9.9.9 garbage", None, "", "999 9.9.9 garbage"),
    ("550-5.1.1 inconnu", 550, "5.1.1", "inconnu"),
])
def test_one_reply_parser(line: str, code: int | None, enhanced: str, text: str) -> None:
    """mailformat.replies: LMTP, the webmail's submission and the timeline cut replies alike."""
    from mailformat.replies import parse_reply

    assert parse_reply(line) == parse_reply(line + "  ")
    found = parse_reply(line)
    assert (found.code, found.enhanced, found.text) == (code, enhanced, text)
