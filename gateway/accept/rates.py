"""Messages per identity per minute, counted in the database so that every gateway process of
an operator (several per host, several hosts) applies one limit (issue #19).

One row per key and minute (``RateCount``). A check adds one to the current minute with an
upsert (``INSERT … ON CONFLICT DO UPDATE … RETURNING``, the same statement on SQLite ≥ 3.35
and PostgreSQL) and estimates the last sixty seconds as the current minute plus the previous
one weighted by the part of it still inside the window (the "sliding window counter"). Past
the limit the transaction is rolled back: a refused message is not counted, as before. Rows
older than the previous minute are deleted now and then by whichever process checks.
"""

from __future__ import annotations

import time

from sqlalchemy import Integer, String, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Database
from gateway.errors import RateLimited
from spool import queue

PURGE_EVERY = 256  # checks between two deletions of old minutes, per process


class RateCount(Base):
    """Messages accepted for one identity (a login, or a peer's certificate DN) during one
    minute (``minute``: Unix time // 60)."""

    __tablename__ = "rate_count"

    key: Mapped[str] = mapped_column(String(254), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class _Refused(Exception):
    """Internal: rolls the increment back."""


class RateLimit:
    """At most ``per_minute`` messages per identity over a sliding minute, shared by every
    process on the database (``per_minute`` 0: no limit, nothing counted)."""

    def __init__(self, db: Database, per_minute: int) -> None:
        self.db, self.per_minute = db, per_minute
        self._checks = 0

    def check(self, key: str, now: float | None = None) -> None:
        """Count one message for ``key``; raise RateLimited past the limit.

        Runs a short write transaction: call it from the handler's thread pool.
        """
        if self.per_minute <= 0:
            return
        now = time.time() if now is None else now
        minute = int(now // 60)
        self._checks += 1
        params = {"k": key[:254], "m": minute, "p": minute - 1}
        try:
            with queue.appending(self.db) as conn:
                current = int(conn.execute(_ADD[conn.dialect.name], params).scalar_one())
                previous = conn.execute(_PREVIOUS, params).scalar() or 0
                if current + previous * (1 - (now % 60) / 60) > self.per_minute:
                    raise _Refused
                if self._checks % PURGE_EVERY == 0:
                    conn.execute(delete(RateCount).where(RateCount.minute < minute - 1))
        except _Refused:
            raise RateLimited(f"Trop de messages : {self.per_minute} par minute au plus, "
                              "réessayez plus tard / rate limit exceeded, try later") from None


# Built once: the hot path only binds its parameters.
_ADD = {
    "postgresql": postgresql.insert(RateCount)
    .values(key=bindparam("k"), minute=bindparam("m"), count=1)
    .on_conflict_do_update(index_elements=[RateCount.key, RateCount.minute],
                           set_={"count": RateCount.count + 1})
    .returning(RateCount.count),
    "sqlite": sqlite.insert(RateCount)
    .values(key=bindparam("k"), minute=bindparam("m"), count=1)
    .on_conflict_do_update(index_elements=[RateCount.key, RateCount.minute],
                           set_={"count": RateCount.count + 1})
    .returning(RateCount.count),
}
_PREVIOUS = select(RateCount.count).where(RateCount.key == bindparam("k"),
                                          RateCount.minute == bindparam("p"))
