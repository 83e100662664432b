"""mailformat: the grammars that were merged (issue #18). One ``Authentication-Results`` grammar
for the gateway that strips and stamps and the webmail that shows (nested comments,
quoted-strings, what each old parser read, and hostile values), one reader of enhanced status
codes for LMTP, the outbound SMTP client, the webmail and the DSN, one line-end rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.accept import opening
from gateway.deliver.outbound import Reply
from mailformat import authresults, headers
from mailformat.authresults import AuthResultsError, Result, authserv_id_of, parse
from mailformat.lineends import to_crlf
from mailformat.replies import enhanced_or_default, is_enhanced, parse_reply
from webmail.mail.badge import Voucher, verdict_of

KEY = authresults.seal_key(b"secret de test")
MESSAGE = (b"From: paul.durand@mss.test\r\nTo: marie.martin@mss.test\r\nSubject: Bilan\r\n"
           b"Date: Mon, 10 Nov 2025 10:00:00 +0100\r\nMessage-ID: <b@mss.test>\r\n\r\nCorps\r\n")


# ---------------------------------------------------------------------- Authentication-Results
def test_the_gateway_s_field_reads_back() -> None:
    found = parse('mss.test; smime=pass (not encrypted) reason="signature verifiee" '
                  "body.smime-identity=marie.martin@mss.test policy.mss-time=20261204T165500Z")
    assert found.authserv_id == "mss.test"
    assert found.results == (Result(
        "smime", "pass", "not encrypted", "signature verifiee",
        (("body.smime-identity", "marie.martin@mss.test"),
         ("policy.mss-time", "20261204T165500Z"))),)


@pytest.mark.parametrize(("value", "authserv_id", "method", "result", "comment"), [
    # RFC 8601 appendix B shapes
    ("example.org 1; none", "example.org", None, None, None),
    ("example.com; spf=pass smtp.mailfrom=example.net", "example.com", "spf", "pass", None),
    ("example.com; dkim/1=pass (good signature) header.d=example.com", "example.com", "dkim",
     "pass", "good signature"),
    ("example.com; auth=pass (cram-md5) smtp.auth=sender@example.net; spf=pass",
     "example.com", "auth", "pass", "cram-md5"),
    # comments nest (RFC 5322 §3.2.2), anywhere CFWS may be
    ('(a (nested) comment) "mss.test" (x); smime (y) = (z) fail (not (really) encrypted)',
     "mss.test", "smime", "fail", "not (really) encrypted"),
    ("mss.test;smime=none(encrypted)", "mss.test", "smime", "none", "encrypted"),
    ("mss.test;\r\n\tsmime=pass", "mss.test", "smime", "pass", None),
    # a quoted-string hides ";", "=", "(" and escaped quotes
    ('"mss;\\"test"; smime=pass reason="a; b=c (d) \\"e\\""', 'mss;"test', "smime", "pass",
     None),
])
def test_grammar(value: str, authserv_id: str, method: str | None, result: str | None,
                 comment: str | None) -> None:
    found = parse(value)
    assert found.authserv_id == authserv_id == authserv_id_of(value)
    if method is None:
        assert found.results == ()
        return
    first = found.results[0]
    assert (first.method, first.result, first.comment) == (method, result, comment)


def test_values_and_properties() -> None:
    found = parse('mss.test; smime=fail reason="a \\"quoted\\" \\\\ text" '
                  'body.smime-identity="CN=x, O=y" policy.mss-report = dsn '
                  "smtp.mailfrom=a=b@mss.test")
    smime = found.result("SMIME")
    assert smime is not None and smime.reason == 'a "quoted" \\ text'
    assert smime.property("body.smime-identity") == "CN=x, O=y"
    assert smime.property("policy.mss-report") == "dsn"
    assert smime.property("smtp.mailfrom") == "a=b@mss.test"  # "=" in a local-part
    assert smime.property("header.d") is None and found.result("dkim") is None


@pytest.mark.parametrize("value", [
    "",
    "(only a comment)",
    "mss.test",  # no result, not even "none"
    "mss.test smime=pass",  # ";" missing
    "mss.test; smime",
    "mss.test; smime=",
    "mss.test; =pass",
    "mss.test; smime=pass reason",
    "mss.test; smime=pass bogus=1",  # a property needs ptype.property
    "mss.test; smime=pass (unbalanced",
    "mss.test; smime=pass (one) two)",
    'mss.test; smime=pass reason="unterminated',
    "mss.test; sm_ime=pass",
    "mss.test; smime=pa$s",
    "mss.test; smime=pass\x00",
    "mss.test; smime=pass\x1b[31m",
    "mss.test; smime=pass; ",
    "mss.test 1 2; none",
])
def test_hostile_or_broken_values_are_refused(value: str) -> None:
    with pytest.raises(AuthResultsError):
        parse(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("mss.test; smime=pass (((", "mss.test"),  # the tail is broken, the head still names us
    ("mss.test\x01; smime=pass", "mss.test"),
    ("(unbalanced mss.test; smime=pass", None),
    ('"mss.test; smime=pass', None),
    ("(a) (b (c)) mss.test.; none", "mss.test."),
    ("; smime=pass", None),
    ("mss.test\ufffd; smime=pass", "mss.test\ufffd"),  # bad bytes decoded: not our id
])
def test_the_authserv_id_is_read_from_the_head_alone(value: str, expected: str | None) -> None:
    assert authserv_id_of(value) == expected


def test_a_forged_field_with_a_broken_tail_is_stripped_and_never_shown_as_ours() -> None:
    """Attack: a field naming us whose tail no grammar reads. The gateway removes it (its head
    names us) and the reader, given it anyway, does not show it as a verdict."""
    forged = b"Authentication-Results: mss.test; smime=pass (((\r\n" + MESSAGE
    assert opening.strip_forged(forged, "mss.test") == MESSAGE
    verdict = verdict_of(["mss.test; smime=pass ((("], "mss.test")
    assert verdict.result == "temperror" and verdict.signer is None


def test_a_forged_second_field_never_wins_over_the_gateway_s() -> None:
    """Attack: a sealed verdict, then another field with our id added below it (IMAP APPEND of
    an edited copy). The first field with our id decides (RFC 8601 §5) and it is sealed; a
    forged field put above it breaks nothing but its own claim."""
    verdict = opening.Verdict("fail", None, False, "signature invalide", "bad_signature")
    sealed = authresults.seal(opening.stamp(MESSAGE, verdict, "mss.test"), KEY,
                              datetime.now(UTC))
    forged = b"Authentication-Results: mss.test; smime=pass (encrypted)\r\n"
    head, _ = headers.split_head(sealed)
    below = headers.parse(head.replace(b"From:", forged + b"From:", 1))
    assert Voucher("mss.test", KEY).verdict(below)[0].result == "fail"
    above = headers.parse(forged + head)
    assert Voucher("mss.test", KEY).verdict(above)[0].result == "forged"


@pytest.mark.parametrize("signer", [
    "CN=Jean policy.mss-report=dsn O=x",
    "CN=Jean policy.mss-time=20200101T000000Z O=x",
    'CN=Jean smime=pass (encrypted) reason="ok" \\ "',
    "CN=Jean (policy.mss-report=mdn",
])
def test_a_signer_s_subject_cannot_pass_for_the_gateway_s_properties(signer: str) -> None:
    """Attack: the reader once searched the sealed value for ``policy.mss-report`` and
    ``policy.mss-time`` with regular expressions, inside the quoted identity too, where a
    peer's certificate subject writes what it likes: a failed signature could be shown as
    "written by your operator", or checked at another time. Read by the grammar, the
    identity is one value and the properties are the gateway's."""
    at = datetime(2026, 12, 4, 16, 55, tzinfo=UTC)
    verdict = opening.Verdict("fail", signer, False, "signature valide, mais d'un autre",
                              "from_mismatch")
    sealed = authresults.seal(opening.stamp(MESSAGE, verdict, "mss.test"), KEY, at)
    shown, when = Voucher("mss.test", KEY).verdict(headers.parse(headers.split_head(sealed)[0]))
    assert (shown.result, shown.encrypted, when) == ("fail", False, at)
    assert shown.signer is not None and shown.signer.startswith("CN=Jean")
    assert shown.reason == "signature valide, mais d'un autre"


def test_every_verdict_the_gateway_writes_reads_back_the_same() -> None:
    """What the gateway checks is what the reader sees: stamp, seal, read."""
    at = datetime(2026, 12, 4, 16, 55, tzinfo=UTC)
    for verdict in (opening.Verdict("pass", "marie.martin@mss.test", True, "signature vérifiée",
                                    None),
                    opening.Verdict("none", None, False, "message non signé", None),
                    opening.Verdict("temperror", "a=b@mss.test", True, "x", None)):
        sealed = authresults.seal(opening.stamp(MESSAGE, verdict, "mss.test"), KEY, at)
        shown, when = Voucher("mss.test", KEY).verdict(
            headers.parse(headers.split_head(sealed)[0]))
        assert (shown.result, shown.encrypted, shown.signer, when) == (
            verdict.result, verdict.encrypted, verdict.signer, at)
        assert shown.reason == opening.ascii_text(verdict.reason)


def test_a_report_is_read_from_its_property() -> None:
    verdict = opening.Verdict("none", None, False, "rapport genere par l'operateur", None)
    sealed = authresults.seal(opening.stamp(MESSAGE, verdict, "mss.test"), KEY,
                              datetime.now(UTC), report="mdn")
    found = authresults.sealed(headers.parse(headers.split_head(sealed)[0]).fields,
                               "mss.test", KEY)
    assert found is not None and found.report == "mdn"


# ---------------------------------------------------------------------- the cut header
@pytest.mark.parametrize("raw", [
    MESSAGE, MESSAGE.replace(b"\r\n", b"\n"), b"Subject: only a header\r\n",
    b"Subject: no line end", b"\r\nbody without header\r\n",
    b"Subject: folded\r\n\tline\r\nX-A: 1\r\n\r\nbody\r\n\r\nmore\r\n",
])
def test_a_head_keeps_every_byte(raw: bytes) -> None:
    """What the gateway's steps change through a Head is byte-exact, as when they re-cut."""
    head = headers.Head.of(raw)
    assert b"".join(head.fields) + head.body == raw and headers.Head.of(head) is head
    kept = head.without(lambda name: name == "x-a")
    assert kept.raw == raw.replace(b"X-A: 1\r\n", b"")
    assert kept.fields == headers.Head.of(kept.raw).fields
    added = kept.prepended(b"Received: a\r\n\tb\r\nX-B: 2\r\n")
    assert added.fields == headers.Head.of(added.raw).fields and added.count("x-b") == 1
    assert headers.same_form(raw, head.without(lambda _name: False)) is raw


# ---------------------------------------------------------------------- status codes
@pytest.mark.parametrize(("status", "valid"), [
    ("5.1.1", True), ("4.4.1", True), ("2.0.0", True), ("5.123.456", True),
    ("5.1234.1", False), ("6.1.1", False), ("5.1", False), ("5.1.1 ", False),
    ("5.x.y", False), ("5.\u0661.1", False), ("", False),  # Arabic-Indic digit
])
def test_an_enhanced_status_code_is_rfc_3463(status: str, valid: bool) -> None:
    assert is_enhanced(status) is valid


@pytest.mark.parametrize(("code", "text", "enhanced"), [
    (550, "5.1.1 Utilisateur inconnu", "5.1.1"),  # what the outbound client read
    (250, "2.0.0 Ok: queued", "2.0.0"),
    (451, "Service indisponible", "4.0.0"),  # no enhanced code: the class's undefined one
    (550, "5.x.y bogus", "5.0.0"),  # was "5.x.y", which the DSN then refused to write
    (550, "5.1.1; garbage", "5.0.0"),
    (452, "4.2.2", "4.2.2"),
    (554, "5.\u0661.1 hostile", "5.0.0"),
])
def test_the_outbound_client_reads_replies_like_everyone(code: int, text: str,
                                                        enhanced: str) -> None:
    assert enhanced_or_default(code, text) == Reply(code, text).enhanced == enhanced


@pytest.mark.parametrize(("line", "enhanced"), [
    ("552 5.2.2 Mailbox full", "5.2.2"),  # LMTP
    ("5.7.1 Refus / refused", "5.7.1"),  # the webmail's submission (smtplib took the code)
    ("550-5.1.1 inconnu", "5.1.1"),
    ("451 4.3.0", "4.3.0"),
    ("250 2.1.5\tOk", "2.1.5"),
    ("550 5.1.1inconnu", ""),
])
def test_reply_lines(line: str, enhanced: str) -> None:
    assert parse_reply(line).enhanced == enhanced


# ---------------------------------------------------------------------- line ends
@pytest.mark.parametrize(("raw", "crlf"), [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n"),
    (b"a\r\r\nb\n\r", b"a\r\n\r\nb\r\n\r\n"),
    (b"a\n\r\nb", b"a\r\n\r\nb"),
    (b"", b""),
])
def test_every_line_end_goes_out_as_crlf(raw: bytes, crlf: bytes) -> None:
    assert to_crlf(raw) == crlf
