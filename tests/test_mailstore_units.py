"""Pure parts of the mail store: database → Dovecot SQL source, LMTP reply classification,
message framing, the master user's hash, delegations → ACL rights."""

from __future__ import annotations

import pytest

from core.db import Database
from core.errors import ConfigError
from mailstore import acl, credentials, lmtp, sql
from mailstore.errors import OverQuota, PermanentFailure, TemporaryFailure, UnknownMailbox
from trust_space.models import (
    Account,
    AccountKind,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    Professional,
    Role,
)


def test_sqlite_source() -> None:
    source = sql.sql_source("sqlite:////srv/mss/mss.db")
    assert source == sql.SqlSource("sqlite", "/srv/mss/mss.db")
    with pytest.raises(ConfigError):
        sql.sql_source("sqlite://")


def test_postgresql_source_quotes_values() -> None:
    source = sql.sql_source("postgresql+psycopg://mss:s3cr'et x@db.local:5433/mss?sslmode=require")
    assert source.driver == "pgsql"
    assert source.connect == ("host=db.local port=5433 dbname=mss user=mss "
                              "password='s3cr\\'et x' sslmode=require")
    with pytest.raises(ConfigError):
        sql.sql_source("mysql://x@y/z")


def test_queries_encode_the_rules() -> None:
    password = sql.password_query("sqlite")
    assert "a.state = 'active'" in password and "julianday(a.locked_until)" in password
    assert "m.state = 'published'" in password and "'%{secured}' = 'TLS'" in password
    assert "now()" in sql.password_query("pgsql")
    external = sql.external_query()
    assert "nopassword" in external and "locked_until" not in external
    assert "COALESCE(m.quota_mb, 300)" in sql.user_query(300)


@pytest.mark.parametrize(("code", "text", "kind", "permanent"), [
    (550, "5.1.1 <x@mss.test> User doesn't exist: x@mss.test", UnknownMailbox, True),
    (552, "5.2.2 <x@mss.test> Quota exceeded (mailbox for user is full)", OverQuota, True),
    (452, "4.2.2 <x@mss.test> Quota exceeded (mailbox for user is full)", OverQuota, False),
    (451, "4.3.0 <x@mss.test> Temporary internal error", TemporaryFailure, False),
    (554, "5.6.0 Invalid message", PermanentFailure, True),
])
def test_classify_lmtp_replies(code: int, text: str, kind: type, permanent: bool) -> None:
    error = lmtp.classify(code, text)
    assert isinstance(error, kind) and error.permanent is permanent
    assert error.smtp_code == code
    assert lmtp.classify(250, "2.0.0 Saved") is None


def test_message_framing() -> None:
    assert lmtp._dot_stuffed(b"a\n.b\r\nc") == b"a\r\n..b\r\nc\r\n"
    assert lmtp._with_folder("marie.martin@mss.test", "Sent") == "marie.martin+Sent@mss.test"
    assert lmtp._with_folder("marie.martin@mss.test", "inbox") == "marie.martin@mss.test"
    for bad in ("../x", "Sent/Old", "", "a b"):
        with pytest.raises(ValueError):
            lmtp._with_folder("marie.martin@mss.test", bad)


def test_ssha512_round_trip() -> None:
    hashed = credentials.ssha512("secret", b"0123456789abcdef")
    assert hashed.startswith("{SSHA512}")
    assert credentials.ssha512("secret", b"0123456789abcdef") == hashed
    assert repr(credentials.MasterCredentials("webmail", "hush")).count("hush") == 0


def test_delegations_become_rights(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as session:
        people = [Professional(rpps=f"1000000010{i}", first_name=f"P{i}", last_name="X")
                  for i in range(4)]
        org = Mailbox(address="pharma.x.64000@mss.test", kind=MailboxKind.ORGANISATIONAL,
                      state=MailboxState.PUBLISHED)
        closed = Mailbox(address="old.x.64000@mss.test", kind=MailboxKind.ORGANISATIONAL,
                         state=MailboxState.CLOSED)
        session.add_all([*people, org, closed])
        for i, p in enumerate(people[:3]):
            session.add(Account(login=f"p{i}@mss.test", kind=AccountKind.PROFESSIONAL,
                                professional=p, failed_attempts=0))
        session.add_all([
            Delegation(mailbox=org, professional=people[0], role=Role.USER),
            Delegation(mailbox=org, professional=people[1], role=Role.MANAGER),
            Delegation(mailbox=org, professional=people[2], role=Role.ADMINISTRATOR),
            Delegation(mailbox=org, professional=people[3], role=Role.USER),  # no account
            Delegation(mailbox=closed, professional=people[0], role=Role.USER),
        ])
    with sqlite_db.transaction() as session:
        found = acl.delegations(session)
    assert found == {"pharma.x.64000@mss.test": {  # administrator: no "a" over IMAP (#14)
        "p0@mss.test": "lrswip", "p1@mss.test": "lrswipkxte", "p2@mss.test": "lrswipkxte"}}


def test_list_row_from_raw_headers() -> None:
    from mailstore.listing import Row, _row
    from webmail.mail.badge import Voucher

    def _envelope(uid: int, prefix: bytes, block: bytes) -> Row:
        return _row(uid, prefix, block, False, Voucher("mss.test", b"\x00" * 32))

    prefix = (b"3 (UID 7 FLAGS (\\Seen \\Flagged) RFC822.SIZE 99 "
              b"BODY[HEADER.FIELDS (DATE FROM TO SUBJECT)] {120}")
    block = ("Subject: =?utf-8?q?R=C3=A9sum=C3=A9_d=C3=A9j=C3=A0?=\r\n"
             "From: =?utf-8?q?Andr=C3=A9?= <andre@mss.test>\r\n"
             "To: a@mss.test, \"Zoé\" <z@mss.test>\r\n"
             "Date: Mon, 10 Nov 2025 10:00:00 +0100\r\n\r\n").encode()
    env = _envelope(7, prefix, block)
    assert env.uid == 7 and env.size == 99 and env.seen and "\\Flagged" in env.flags
    assert env.subject == "Résumé déjà" and env.sender == "André <andre@mss.test>"
    assert env.to == ("a@mss.test", "Zoé <z@mss.test>") and env.date is not None
    assert _envelope(8, b"8 (UID 8)", b"Date: nonsense\r\n\r\n").date is None
