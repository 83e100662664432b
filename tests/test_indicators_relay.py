"""The monthly indicators count a real message: submitted at mss.test with a recipient there and
one at the peer operator autre.test, relayed over mutual TLS and delivered by both queues
(``tests.pair_fixtures``). The indicators read the timeline and the audit trail through the
names the gateway writes with (``spool.events``), so this breaks if a writer renames one."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from pathlib import Path

from core.db import utcnow
from mss.indicators import MessageCounts, Month, compute
from tests.gateway_fixtures import Operator

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures", "tests.pair_fixtures"]
MARIE_A, JULIE_A, PAUL_B = ("marie.martin@mss.test", "julie.bernard@mss.test",
                            "paul.durand@autre.test")


def _personal(op: Operator) -> MessageCounts:
    """This month's message counts of the personal mailboxes (``PER``)."""
    with op.space.db.read() as session:
        return compute(session, Month.of(utcnow()), "op").messages["PER"]


def test_a_relayed_message_counts_at_both_operators(
        pair: tuple[Operator, Operator, Path]) -> None:
    a, b, _ = pair
    before_a, before_b = _personal(a), _personal(b)
    subject = f"Indicateurs {uuid.uuid4().hex[:8]}"
    message = (f"From: {MARIE_A}\r\nTo: {PAUL_B}, {JULIE_A}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{uuid.uuid4().hex}@test>\r\n\r\nCompte rendu.\r\n").encode()
    a.submit(MARIE_A, [PAUL_B, JULIE_A], message)
    for op, to in ((b, PAUL_B), (a, JULIE_A)):
        op.wait_for(to, lambda raw: message_from_bytes(raw)["Subject"] == subject)
    after_a, after_b = _personal(a), _personal(b)
    assert after_a.sent - before_a.sent == 1
    assert after_a.sent_to_peers - before_a.sent_to_peers == 1
    assert after_a.received - before_a.received == 1  # Julie, here
    assert after_a.received_from_peers == before_a.received_from_peers
    assert after_b.received - before_b.received == 1  # Paul, at the peer
    assert after_b.received_from_peers - before_b.received_from_peers == 1
