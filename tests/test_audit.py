"""The audit trail's hash chain detects edited, deleted and truncated records (both databases)."""

import pytest
from sqlalchemy import delete, update

from core import audit
from core.audit import AuditRecord


def _fill(db, n=5):
    with db.transaction() as s:
        for i in range(n):
            audit.record(s, actor=f"user{i}@mss.test", action="imap.login", target="INBOX",
                         request={"size": i}, outcome="ok")


def test_chain_verifies(db):
    _fill(db)
    with db.transaction() as s:
        report = audit.verify(s)
        assert report.ok and report.count == 5
        rows = audit.recent(s, 2)
        assert [r.request for r in rows] == ['{"size": 4}', '{"size": 3}']


def test_empty_chain_verifies(db):
    with db.transaction() as s:
        assert audit.verify(s).ok


def test_edited_record_detected(db):
    _fill(db)
    with db.transaction() as s:
        target_id = audit.recent(s, 5)[2].id
        s.execute(update(AuditRecord).where(AuditRecord.id == target_id).values(outcome="refused"))
    with db.transaction() as s:
        report = audit.verify(s)
    assert not report.ok and report.first_bad_id == target_id and "modifié" in report.reason


def test_deleted_record_detected(db):
    _fill(db)
    with db.transaction() as s:
        ids = [r.id for r in audit.recent(s, 5)][::-1]
        s.execute(delete(AuditRecord).where(AuditRecord.id == ids[1]))
    with db.transaction() as s:
        report = audit.verify(s)
    assert not report.ok and report.first_bad_id == ids[2]


def test_truncated_tail_detected(db):
    _fill(db)
    with db.transaction() as s:
        last = audit.recent(s, 1)[0].id
        s.execute(delete(AuditRecord).where(AuditRecord.id == last))
    with db.transaction() as s:
        report = audit.verify(s)
    assert not report.ok and "tronquée" in report.reason


def test_rolled_back_transaction_leaves_chain_intact(db):
    _fill(db, 2)
    with pytest.raises(RuntimeError), db.transaction() as s:
        audit.record(s, actor="a", action="b", outcome="c")
        raise RuntimeError("boom")
    with db.transaction() as s:
        report = audit.verify(s)
    assert report.ok and report.count == 2
