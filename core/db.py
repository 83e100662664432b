"""Database engine, sessions and the transaction boundary (CONVENTIONS.md, 6).

SQLite (embedded default) and PostgreSQL (production) are both first-class. Models never
commit; a use case runs inside ``db.transaction()`` and receives its session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# What Core-only code takes: an ORM session, or a bare connection on hot paths (the relay asks
# the policy for every MAIL FROM and RCPT TO and appends per message; a connection running a
# statement built once costs a quarter of a session building it each time). Such code selects
# columns, never entities, so that both give the same rows.
Executor = Session | Connection


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas mss relies on.

    SQLite: WAL journal, synchronous=FULL (a commit is on disk before we acknowledge anything),
    foreign keys on, a busy timeout so several processes can share the file.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy manage BEGIN so that "BEGIN IMMEDIATE" can be issued for writers.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the lock at BEGIN: no deadlock-prone read→write upgrade. Read-only
            # units (Database.read) take a plain BEGIN: WAL readers never wait for writers.
            read_only = conn.get_execution_options().get("mss_read_only")
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


# Packages that declare tables. Named, not imported, so core depends on nothing above it.
MODEL_MODULES = ("core.audit", "core.counters", "certs.models", "trust_space.models",
                 "trust_space.changes", "spool.models", "gateway.accept.rates",
                 "peers.health", "webmail.models", "trust_space.whitelist_history",
                 "webmail.mail.mailrules", "webmail.mail.preferences", "webmail.mail.notify",
                 "webmail.contacts.models")


def load_models() -> MetaData:
    """Import every model module so that ``Base.metadata`` knows all tables."""
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata


class Database:
    """An engine and its session factory; one per process, injected where needed."""

    def __init__(self, url: str, *, connections: int = 0, **engine_kwargs: Any) -> None:
        """``connections``: how many threads of this process may hold one at the same time (the
        pool keeps that many, plus SQLAlchemy's 10 overflow); 0 keeps SQLAlchemy's 5. A thread
        beyond the pool waits for a connection: sized from the threads that use it (issue #19)."""
        self.url = url
        if connections > 0:
            engine_kwargs.setdefault("pool_size", connections)
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(mss_read_only=True)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends normally, rolls back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that only reads (always rolled back). On SQLite it does not take the
        write lock, so policy look-ups never queue behind writers."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """``read()`` as a bare connection, for hot paths written in Core (``Executor``)."""
        with self._read_engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    @contextmanager
    def appending(self) -> Iterator[Connection]:
        """``transaction()`` as a bare connection, for hot paths written in Core (inserts):
        commits when the block ends normally, rolls back on any error."""
        with self.engine.begin() as conn:
            yield conn

    def create_all(self) -> None:
        """Create the schema directly (tests); production uses ``core.migrate.upgrade``."""
        load_models()
        Base.metadata.create_all(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
