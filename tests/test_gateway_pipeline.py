"""The relay's policy steps, one at a time (pure functions and the SQLite directory)."""

from __future__ import annotations

import pytest

from core.db import Database
from gateway.accept import checks
from gateway.errors import (
    LoopDetected,
    MessageTooBig,
    RecipientRefused,
    SenderRefused,
    TooManyRecipients,
)
from gateway.smtp.replies import reply_for
from spool.models import RecipientKind
from trust_space.models import Mailbox, MailboxKind, MailboxState, Operator, TrustedDomain

PEER_DN = "CN=autre.test,O=Pair"


@pytest.fixture
def directory(sqlite_db: Database) -> Database:
    with sqlite_db.transaction() as session:
        op = Operator(name="Pair", certificate_dn=PEER_DN)
        session.add_all([
            op, TrustedDomain(domain="autre.test", operator=op, certificate_dn=PEER_DN),
            Mailbox(address="paul@mss.test", kind=MailboxKind.PERSONAL,
                    state=MailboxState.PUBLISHED),
            Mailbox(address="hugo@mss.test", kind=MailboxKind.PERSONAL,
                    state=MailboxState.SUSPENDED),
        ])
    return sqlite_db


def test_recipients_inside_and_outside_the_trust_space(directory: Database) -> None:
    with directory.transaction() as s:
        assert checks.route_recipient(s, "Paul@mss.test", {"mss.test"}).kind is \
            RecipientKind.LOCAL
        assert checks.route_recipient(s, "x@autre.test", {"mss.test"}).kind is \
            RecipientKind.PEER
        for address in ("x@gmail.example", "hugo@mss.test", "nobody@mss.test"):
            with pytest.raises(RecipientRefused) as err:
                checks.route_recipient(s, address, {"mss.test"})
            assert err.value.smtp_reply().startswith("550 5.7.1 ")
        with pytest.raises(RecipientRefused):  # the relay port never relays to a third party
            checks.route_recipient(s, "x@autre.test", {"mss.test"}, local_only=True)


def test_peer_certificate_must_match_the_sender_domain(directory: Database) -> None:
    with directory.transaction() as s:
        checks.check_peer(s, PEER_DN, "x@autre.test")
        checks.check_peer(s, PEER_DN, "")  # a DSN from a known operator
        with pytest.raises(SenderRefused):
            checks.check_peer(s, "CN=imposteur,O=Pair", "x@autre.test")
        with pytest.raises(SenderRefused):
            checks.check_peer(s, PEER_DN, "x@mss.test")


def test_limits() -> None:
    checks.check_count(49, 50)
    with pytest.raises(TooManyRecipients) as many:
        checks.check_count(50, 50)
    assert many.value.smtp_reply().startswith("452 4.5.3")
    with pytest.raises(MessageTooBig) as big:
        checks.check_size(101, 100)
    assert big.value.smtp_reply().startswith("552 5.3.4")


def test_loop_detection_counts_received_fields() -> None:
    raw = b"Received: a\r\n" * 3 + b"Subject: x\r\n\r\nReceived: not a header\r\n"
    checks.check_loop(raw, 3)
    with pytest.raises(LoopDetected) as err:
        checks.check_loop(raw, 2)
    assert err.value.smtp_reply().startswith("554 5.4.6")


def test_message_id_kept_or_added() -> None:
    raw = b"Message-ID:  <abc@x> \r\nSubject: s\r\n\r\nb"
    assert checks.message_key(raw, "Q1", "mss.test") == (raw, "<abc@x>")
    added, key = checks.message_key(b"Subject: s\r\n\r\nb", "Q1", "mss.test")
    assert key == "<Q1@mss.test>" and added.startswith(b"Message-ID: <Q1@mss.test>\r\nDate: ")


def test_trace_names_hosts_and_tls_never_content() -> None:
    raw = checks.trace(b"Subject: secret\r\n\r\nbody", helo="client\r\nX-Evil: 1", ip="1.2.3.4",
                         hostname="mx.mss.test", queue_id="Q1",
                         tls="(version=TLS1.3 cipher=X)", authenticated=True)
    head = raw.split(b"Subject:")[0]
    assert b"with ESMTPSA id Q1" in head and b"TLS1.3" in head and b"[1.2.3.4]" in head
    assert b"\nX-Evil" not in head and b"secret" not in head  # no header injection via HELO


def test_one_place_maps_errors_to_replies() -> None:
    assert reply_for(SenderRefused("Refus / refused")).startswith("550 5.7.1 Refus")
    generic = reply_for(RuntimeError("secret internals"))
    assert generic.startswith("451 4.3.0") and "secret" not in generic
