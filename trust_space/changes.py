"""The directory's change counter (issue #19): one row whose ``version`` goes up with every
change to the tables the relay's policy reads, written by database triggers so that no writer
(the webmail, ``mss``, an import, a hand-made SQL statement, another host) can forget it.

Readers that keep grants in memory (the gateway's ``Decisions``) read this one integer every
second or so and forget their grants when it moved: a mailbox suspended in the webmail is
refused by every gateway process within that delay, whatever their cache's lifetime.

SQLite: ``AFTER INSERT/UPDATE/DELETE`` triggers (SQLite has one writer at a time). PostgreSQL:
a deferred constraint trigger, so that the counter's row is locked only at commit, after every
other lock of the transaction: two transactions changing the directory in different orders
cannot deadlock on it.
"""

from __future__ import annotations

from sqlalchemy import DDL, Integer, event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Executor

# What the relay's policy reads (trust_space.policy): a change to any of them may change a
# MAIL FROM right or a RCPT route. ``account`` is not here: logins are checked at AUTH.
WATCHED = ("structure", "professional", "operator", "trusted_domain", "mailbox", "delegation")

_BUMP = "UPDATE directory_version SET version = version + 1 WHERE id = 1"


class DirectoryVersion(Base):
    """One row (id 1): how many changes the directory's tables have seen."""

    __tablename__ = "directory_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


def trigger_sql(dialect: str) -> list[str]:
    """The statements that create the first row and the triggers (migration and tests)."""
    if dialect == "postgresql":
        statements = ["INSERT INTO directory_version (id, version) VALUES (1, 0) "
                      "ON CONFLICT DO NOTHING"]
        statements.append(
            "CREATE OR REPLACE FUNCTION directory_changed() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN {_BUMP}; RETURN NULL; END $$")
        statements += [
            f"CREATE CONSTRAINT TRIGGER directory_changed AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "EXECUTE FUNCTION directory_changed()" for table in WATCHED]
        return drop_sql(dialect)[:-1] + statements
    statements = ["INSERT OR IGNORE INTO directory_version (id, version) VALUES (1, 0)"]
    statements += [
        f"CREATE TRIGGER IF NOT EXISTS directory_changed_{table}_{op.lower()} AFTER {op} "
        f"ON {table} BEGIN {_BUMP}; END"
        for table in WATCHED for op in ("INSERT", "UPDATE", "DELETE")]
    return statements


def drop_sql(dialect: str) -> list[str]:
    """The reverse of ``trigger_sql`` (the migration's downgrade)."""
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS directory_changed ON {table}" for table in WATCHED] + [
            "DROP FUNCTION IF EXISTS directory_changed()"]
    return [f"DROP TRIGGER IF EXISTS directory_changed_{table}_{op}" for table in WATCHED
            for op in ("insert", "update", "delete")]


def version(session: Executor) -> int:
    """The current count (0 when the row is missing: a schema older than the migration)."""
    return int(session.scalar(select(DirectoryVersion.version)
                              .where(DirectoryVersion.id == 1)) or 0)


# The schema created directly (tests, ``Database.create_all``) gets the same triggers as the
# migration, once every table exists (the metadata's event comes after all of them).
def _create_triggers(target: object, connection: Connection, **kw: object) -> None:
    created = kw.get("tables")
    if not isinstance(created, list) or DirectoryVersion.__table__ not in created:
        return
    for statement in trigger_sql(connection.dialect.name):
        connection.execute(DDL(statement))


event.listen(Base.metadata, "after_create", _create_triggers)
