"""The audit trail (MSSanté ECO.4.1.2): who, when, what, on what, request, outcome.

Records are hash-chained: each carries the SHA-256 of its own canonical content plus the hash of
the record before it, so editing or deleting any record breaks the chain from that point on and
``verify`` names the first broken record. Never put message content in a record
(CONVENTIONS.md, 12): ids, addresses, codes and sizes only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, bindparam, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, Executor, UTCDateTime, utcnow

GENESIS = "0" * 64


class AuditRecord(Base):
    __tablename__ = "audit_record"

    # INTEGER on SQLite so that it is the rowid alias (auto-increment); BIGINT elsewhere.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                    primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(254), default="", index=True)
    request: Mapped[str] = mapped_column(Text, default="{}")  # JSON summary, no content
    outcome: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row: the newest record's hash and the count. It detects a deleted tail, which the
    chain alone cannot, and its row lock serialises appends across processes."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)


def _digest(prev_hash: str, at: datetime, actor: str, action: str, target: str,
            request: str, outcome: str) -> str:
    canonical = json.dumps(
        [prev_hash, at.isoformat(timespec="microseconds"), actor, action, target, request,
         outcome],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Built once (the relay appends one record per message).
_HEAD = select(AuditHead.hash).where(AuditHead.id == 1).with_for_update()
_INSERT = insert(AuditRecord)
_ADVANCE = (update(AuditHead).where(AuditHead.id == 1)
            .values(hash=bindparam("new_hash"), count=AuditHead.count + 1))


def record(
    session: Executor,
    *,
    actor: str,
    action: str,
    outcome: str,
    target: str = "",
    request: Mapping[str, Any] | None = None,
) -> str:
    """Append one record to the chain, inside the caller's transaction; return its hash.

    ``request`` is a small summary (ids, addresses, sizes, codes); it must not contain message
    bodies, subjects or secrets. Appends are serialised so that concurrent writers cannot fork the
    chain: a row lock on the head (PostgreSQL), the database write lock (SQLite, BEGIN IMMEDIATE).
    Core statements, not the ORM unit of work: the relay appends one per accepted message.
    """
    if isinstance(session, Session):  # the Core path on the session's connection, same
        session = session.connection()  # transaction: the ORM's would compile each time
    head = session.execute(_HEAD).first()
    prev = head[0] if head is not None else GENESIS
    at = utcnow()
    req = json.dumps(dict(request or {}), ensure_ascii=False, sort_keys=True, default=str)
    digest = _digest(prev, at, actor, action, target, req, outcome)
    session.execute(_INSERT, {"at": at, "actor": actor, "action": action, "target": target,
                              "request": req, "outcome": outcome, "prev_hash": prev,
                              "hash": digest})
    if head is None:
        session.execute(insert(AuditHead), {"id": 1, "hash": digest, "count": 1})
    else:
        session.execute(_ADVANCE, {"new_hash": digest})
    return digest


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    count: int
    first_bad_id: int | None = None
    reason: str = ""


def _records(session: Session, page: int = 1000) -> Iterator[AuditRecord]:
    """All records in id order, a page at a time (keyset paging: no cursor left open)."""
    last_id = -1
    while True:
        rows = session.execute(
            select(AuditRecord).where(AuditRecord.id > last_id).order_by(AuditRecord.id)
            .limit(page)
        ).scalars().all()
        yield from rows
        for row in rows:  # keep the identity map small on long trails
            session.expunge(row)
        if len(rows) < page:
            return
        last_id = rows[-1].id


def verify(session: Session) -> ChainReport:
    """Walk the whole chain; report the first record whose hash or link does not verify."""
    prev = GENESIS
    count = 0
    for rec in _records(session):
        count += 1
        if rec.prev_hash != prev:
            return ChainReport(False, count, rec.id,
                               "maillon manquant ou réordonné (enregistrement supprimé ?)")
        expected = _digest(rec.prev_hash, rec.at, rec.actor, rec.action, rec.target,
                           rec.request, rec.outcome)
        if rec.hash != expected:
            return ChainReport(False, count, rec.id, "contenu modifié")
        prev = rec.hash
    head = session.get(AuditHead, 1)
    head_hash, head_count = (head.hash, head.count) if head else (GENESIS, 0)
    if head_hash != prev or head_count != count:
        return ChainReport(False, count, None,
                           f"fin de chaîne tronquée : {head_count} enregistrements attendus, "
                           f"{count} trouvés")
    return ChainReport(True, count)


def recent(session: Session, limit: int = 50, target: str | None = None) -> list[AuditRecord]:
    """The newest records, newest first (operator pages, CLI)."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditRecord.target == target)
    return list(session.execute(query).scalars())
