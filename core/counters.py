"""Counters with an expiry, kept in the database so that every process of an operator (several
webmail processes or hosts, issue #19) counts against one limit: the webmail's request limits
per address (Flask-Limiter, through ``webmail.limits``) and its per-identifier guards
(``webmail.auth.rules.PhantomLocks``: unknown identifiers' lock-outs, the password reset's
limits). The gateway's messages per minute have their own table (``gateway.accept.rates``).

One row per key (``WindowCount``). ``add`` is one upsert (``INSERT … ON CONFLICT DO UPDATE …
RETURNING``, the same statement on SQLite ≥ 3.35 and PostgreSQL): a row whose window has
passed starts again at the amount added. Expired rows are deleted now and then by whichever
process adds (``PURGE_EVERY``). Every function takes the caller's unit of work (a Session or a
Connection), so a count lands in the same transaction as the audit line that goes with it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Float, Integer, String, bindparam, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base

PURGE_EVERY = 512  # additions between two deletions of expired rows, per process
_additions = itertools.count(1)


class WindowCount(Base):
    """How many times ``key`` was counted since its window began; the window ends at
    ``expires`` (Unix time)."""

    __tablename__ = "window_count"

    key: Mapped[str] = mapped_column(String(254), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires: Mapped[float] = mapped_column(Float)


Unit = Session | Connection


def add(db: Unit, key: str, seconds: float, amount: int = 1, *, extend: bool = False,
        now: float | None = None) -> int:
    """Add ``amount`` to ``key`` and return its count in the current window.

    A key seen for the first time, or whose window has ended, starts a window of ``seconds``.
    ``extend``: every addition pushes the end to ``seconds`` from now (a lock-out counted from
    the last failure); otherwise the window is fixed from its first addition (Flask-Limiter's
    fixed window).
    """
    now = time.time() if now is None else now
    params = {"k": key, "a": amount, "now": now, "until": now + seconds}
    dialect = (db.get_bind() if isinstance(db, Session) else db).dialect.name
    count = int(db.execute(_ADD[dialect, extend], params).scalar_one())
    if next(_additions) % PURGE_EVERY == 0:
        db.execute(delete(WindowCount).where(WindowCount.expires <= now))
    return count


def read(db: Unit, key: str, now: float | None = None) -> tuple[int, float | None]:
    """``key``'s count and the end of its window; ``(0, None)`` once the window has ended."""
    now = time.time() if now is None else now
    row = db.execute(select(WindowCount.count, WindowCount.expires)
                     .where(WindowCount.key == key)).first()
    if row is None or row[1] <= now:
        return 0, None
    return int(row[0]), float(row[1])


def clear(db: Unit, key: str) -> None:
    db.execute(delete(WindowCount).where(WindowCount.key == key))


def clear_prefix(db: Unit, prefix: str) -> int:
    """Forget every key starting with ``prefix``; how many there were."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    result = db.execute(delete(WindowCount)
                        .where(WindowCount.key.like(escaped + "%", escape="\\")))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _upsert(insert: Callable[..., Any], extend: bool) -> Any:
    ended = WindowCount.expires <= bindparam("now")
    stmt = insert(WindowCount).values(key=bindparam("k"), count=bindparam("a"),
                                      expires=bindparam("until"))
    return stmt.on_conflict_do_update(
        index_elements=[WindowCount.key],
        set_={"count": case((ended, bindparam("a")), else_=WindowCount.count + bindparam("a")),
              "expires": bindparam("until") if extend else
              case((ended, bindparam("until")), else_=WindowCount.expires)},
    ).returning(WindowCount.count)


# Built once: a check only binds its parameters.
_ADD = {(name, extend): _upsert(insert, extend)
        for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
        for extend in (False, True)}
