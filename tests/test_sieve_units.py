"""The pure parts of out-of-office and filters (issue #17): the script generator's escaping
(checked by Pigeonhole's own compiler, ``sievec``), the ManageSieve response reader, the
``sendmail`` program's reading of Dovecot's call, and the policy for a mailbox speaking for
itself (its out-of-office replies)."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest

from core.db import Database
from mailstore import sendmail
from mailstore.managesieve import SieveUnavailable, _literal, _string, read_response
from mailstore.sievescript import (
    Rule,
    ScriptError,
    Vacation,
    multiline,
    quoted,
    render,
    utc_instant,
)
from tests.test_policy import _box, _populate
from trust_space.models import MailboxKind
from trust_space.policy import Identity, mailbox_identity, may_send_as

HOSTILE = ['"', "\\", '\\"', 'a" ; redirect "x@y.test', "${x}", "${1}",
           'require "vnd.dovecot.execute";', "text:", "é\t💊"]
SIEVEC = shutil.which("sievec")


def _unquote(literal: str) -> str:
    """Read a Sieve quoted string back (RFC 5228 §2.4.2: only \\\\ and \\" are escapes)."""
    assert literal.startswith('"') and literal.endswith('"')
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        if body[i] == "\\":
            i += 1
        else:
            assert body[i] != '"', "an unescaped quote ends the string early"
        out.append(body[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_quoted_string_holds_exactly_the_value(value: str) -> None:
    assert _unquote(quoted(value)) == value


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "\x1b[31m", "a\x7fb"])
def test_control_characters_never_reach_a_one_line_string(value: str) -> None:
    with pytest.raises(ScriptError):
        quoted(value)


def test_multiline_text_is_dot_stuffed_and_ends_once() -> None:
    text = multiline("Bonjour\r\n.\r\n..x\n.\nfin\rnext")
    lines = text.split("\n")
    assert lines[0] == "text:" and lines[-2:] == [".", ""]
    body = lines[1:-2]
    assert body == ["Bonjour", "..", "...x", "..", "fin", "next"]
    assert [line for line in body if line == "."] == []  # nothing ends the literal early
    with pytest.raises(ScriptError):
        multiline("nul \x00")


def test_paris_days_become_utc_instants() -> None:
    assert utc_instant(date(2026, 12, 12)) == "2026-12-11T23:00:00Z"  # winter, UTC+1
    assert utc_instant(date(2026, 12, 12), end=True) == "2026-12-12T23:00:00Z"
    assert utc_instant(date(2026, 7, 14)) == "2026-07-13T22:00:00Z"  # summer, UTC+2
    assert utc_instant(date(2026, 3, 29), end=True) == "2026-03-29T22:00:00Z"  # DST day


def test_the_script_never_requires_variables_or_encoded_characters() -> None:
    script = render(Vacation("${x}", "${y}"), [Rule("subject", "${z}", "read")])
    require = next(line for line in script.splitlines() if line.startswith("require"))
    assert "variables" not in require and "encoded-character" not in require


def test_refused_values() -> None:
    with pytest.raises(ScriptError):
        render(Vacation("a", "b", days=0), [])
    with pytest.raises(ScriptError):
        render(Vacation("a", "b", days=91), [])
    with pytest.raises(ScriptError):
        render(None, [Rule("body", "x", "read")])
    with pytest.raises(ScriptError):
        render(None, [Rule("subject", "x", "redirect")])


@pytest.mark.skipif(SIEVEC is None, reason="dovecot-sieve absent")
def test_pigeonhole_compiles_every_hostile_script(tmp_path: Path) -> None:
    for i, value in enumerate(HOSTILE):
        script = render(Vacation(value, f"{value}\n.\n{value}", date(2026, 1, 1),
                                 date(2026, 12, 31), 3),
                        [Rule("from", value, "move", f"Dossier {value}"),
                         Rule("to", value, "flag"), Rule("subject", value, "read")])
        path = tmp_path / f"s{i}.sieve"
        path.write_text(script)
        done = subprocess.run([str(SIEVEC), str(path), str(tmp_path / f"s{i}.svbin")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (value, done.stderr)
        dump = subprocess.run([str(SIEVEC), "-d", str(path), "-"], capture_output=True,
                              text=True, timeout=30).stdout
        assert "execute" not in dump.split("require", 1)[0]  # no extension slipped in


# ---------------------------------------------------------------------- ManageSieve reader
def test_responses_with_literals_and_codes() -> None:
    wire = (b'"mss-webmail" ACTIVE\r\n"perso"\r\n{5}\r\na"b\\c\r\nOK "Listed."\r\n'
            b'NO (QUOTA/MAXSIZE) "Script too big"\r\n'
            b'NO {10}\r\nline1\r\nabc\r\n')
    io_ = io.BytesIO(wire)
    lines, reply = read_response(io_)
    assert lines == [["mss-webmail", "ACTIVE"], ["perso"], ['a"b\\c']]
    assert (reply.status, reply.text) == ("OK", "Listed.")
    _, reply = read_response(io_)
    assert (reply.status, reply.code, reply.text) == ("NO", "QUOTA/MAXSIZE", "Script too big")
    _, reply = read_response(io_)
    assert reply.status == "NO" and reply.text == "line1\r\nabc"


@pytest.mark.parametrize("wire", [b'"unterminated\r\n', b"{99999999999}\r\n", b"OK\n",
                                  b"{3}\r\nab", b"", b"x" * 9000 + b"\r\n"])
def test_malformed_responses_close_the_session(wire: bytes) -> None:
    with pytest.raises(SieveUnavailable):
        read_response(io.BytesIO(wire))


def test_names_and_scripts_on_the_wire() -> None:
    assert _string('a"b\\c') == b'"a\\"b\\\\c"'
    assert _string("a\r\nb").startswith(b"{4+}\r\n")  # never a line break in a quoted string
    assert _literal("é") == b"{2+}\r\n\xc3\xa9"  # octets, not characters


# ---------------------------------------------------------------------- sendmail program
def test_sendmail_reads_dovecots_call() -> None:
    call = sendmail.Call(["/c.json", "Marie.Martin@mss.test", "-i", "-f", "<>", "--",
                          "paul@mss.test"])
    assert (call.user, call.sender, call.recipients) == ("marie.martin@mss.test", "",
                                                         ["paul@mss.test"])
    for bad in (["/c.json"], ["/c.json", "nobody", "--", "x@y"], ["/c.json", "a@b", "-f", "x"]):
        with pytest.raises(ValueError):
            sendmail.Call(bad)


def test_sendmail_refuses_a_bad_configuration(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert sendmail.main([str(tmp_path / "absent.json"), "a@b.test", "--", "c@d.test"]) == \
        sendmail.EX_CONFIG
    assert sendmail.main(["/c.json"]) == sendmail.EX_USAGE
    (tmp_path / "c.json").write_text('{"host": "127.0.0.1", "port": 1, "login": "l", '
                                     '"secret": "s", "ca": "/nonexistent"}')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert sendmail.main([str(tmp_path / "c.json"), "a@b.test", "--", "c@d.test"]) == \
        sendmail.EX_DATAERR  # nothing to send


# ---------------------------------------------------------------------- policy
def test_a_mailbox_speaking_for_itself_holds_that_mailbox_only(db: Database) -> None:
    with db.transaction() as s:
        _populate(s)
        pharma = mailbox_identity(s, "PHARMA.ducentre.64000@mss.test")
        assert pharma is not None
        assert may_send_as(s, pharma, "pharma.ducentre.64000@mss.test").allowed
        assert may_send_as(s, pharma, "marie.martin@mss.test").code == "not_owner"
        assert mailbox_identity(s, "marie.martin@mss.test") is None  # personal: its account
        assert mailbox_identity(s, "remote@pair.test") is None
        assert mailbox_identity(s, "lps.cabinet.64000@mss.test") is None
        closed = mailbox_identity(s, "cabinet.ferme.64000@mss.test")
        assert closed is not None  # known, but a closed mailbox sends nothing
        assert may_send_as(s, closed, "cabinet.ferme.64000@mss.test").code == "mailbox_closed"
        assert may_send_as(s, Identity.for_mailbox("x", 10**6), "pharma.ducentre.64000@mss.test"
                           ).code == "not_owner"
        applicative = _box(s, "lps.vide.64000@mss.test", MailboxKind.APPLICATIVE)
        assert may_send_as(s, Identity.for_mailbox("x", applicative.id),
                           "lps.vide.64000@mss.test").allowed  # only through Identity itself
