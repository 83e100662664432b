"""rate counters and the directory's change counter

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 21:45:00.000000

Issue #19, several gateway processes: ``rate_count`` holds the messages per identity and
minute that every process counts against one limit (``gateway.accept.rates``);
``directory_version`` goes up with each change to the directory's tables, through triggers
(``trust_space.changes``, whose statements are repeated here as they stood at this revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

WATCHED = ("structure", "professional", "operator", "trusted_domain", "mailbox", "delegation")
BUMP = "UPDATE directory_version SET version = version + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "rate_count",
        sa.Column("key", sa.String(length=254), nullable=False),
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "minute", name=op.f("pk_rate_count")),
    )
    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_version")),
    )
    op.execute("INSERT INTO directory_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION directory_changed() RETURNS trigger "
                   f"LANGUAGE plpgsql AS $$ BEGIN {BUMP}; RETURN NULL; END $$")
        for table in WATCHED:
            op.execute(f"CREATE CONSTRAINT TRIGGER directory_changed AFTER INSERT OR UPDATE "
                       f"OR DELETE ON {table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                       "EXECUTE FUNCTION directory_changed()")
        return
    for table in WATCHED:
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER directory_changed_{table}_{event.lower()} AFTER "
                       f"{event} ON {table} BEGIN {BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS directory_changed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS directory_changed()")
    else:
        for table in WATCHED:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS directory_changed_{table}_{event}")
    op.drop_table("directory_version")
    op.drop_table("rate_count")
