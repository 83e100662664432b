"""whitelist history

Revision ID: 0007
Revises: 0005 (0006 was never used: see below)
Create Date: 2026-12-12 10:00:00.000000

Issue #20: the whitelist followed from its URL. ``whitelist_change`` keeps every change (who,
when, source, the diff with DNs before and after), ``whitelist_fetch`` every fetch of the
published list with its result and HTTP validators, ``whitelist_warning`` each peer DN change
or domain removal until an operator acknowledges it (``trust_space.whitelist_history``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0007"
# The number 0006 was kept for another change of issue #20 that never used it: it is skipped,
# and this revision follows 0005 for good (the peer probes came later as 0008).
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "whitelist_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", core.db.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=600), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whitelist_change")),
    )
    with op.batch_alter_table("whitelist_change") as batch:
        batch.create_index(batch.f("ix_whitelist_change_at"), ["at"], unique=False)
    op.create_table(
        "whitelist_fetch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", core.db.UTCDateTime(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("requested_by", sa.String(length=254), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("etag", sa.String(length=200), nullable=False),
        sa.Column("last_modified", sa.String(length=100), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=True),
        sa.Column("change_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["change_id"], ["whitelist_change.id"],
                                name=op.f("fk_whitelist_fetch_change_id_whitelist_change"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whitelist_fetch")),
    )
    with op.batch_alter_table("whitelist_fetch") as batch:
        batch.create_index(batch.f("ix_whitelist_fetch_at"), ["at"], unique=False)
    op.create_table(
        "whitelist_warning",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("dn_before", sa.String(length=500), nullable=False),
        sa.Column("dn_after", sa.String(length=500), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=254), nullable=False),
        sa.ForeignKeyConstraint(["change_id"], ["whitelist_change.id"],
                                name=op.f("fk_whitelist_warning_change_id_whitelist_change"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_whitelist_warning")),
    )
    with op.batch_alter_table("whitelist_warning") as batch:
        batch.create_index(batch.f("ix_whitelist_warning_change_id"), ["change_id"],
                           unique=False)
        batch.create_index(batch.f("ix_whitelist_warning_acknowledged_at"),
                           ["acknowledged_at"], unique=False)


def downgrade() -> None:
    op.drop_table("whitelist_warning")
    op.drop_table("whitelist_fetch")
    op.drop_table("whitelist_change")
