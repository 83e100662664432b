"""national directory feed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 10:00:00.000000

Issue #20: ``directory_feed`` queues the FHIR Patches telling the national directory (Annuaire
Santé, ANS guide "API MSS") about each mailbox's publication, liste rouge and closing
(``trust_space.annuaire``), with their sending state, attempts and last answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_feed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column(
            "event",
            sa.Enum("published", "liste_rouge_on", "liste_rouge_off", "closed",
                    name="feed_event", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("resource", sa.String(length=20), nullable=False),
        sa.Column("identifier", sa.String(length=120), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("pending", "sending", "sent", "not_found", "precondition_failed", "failed",
                    "resolved", name="feed_state", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_answer", sa.String(length=500), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailbox.id"],
            name=op.f("fk_directory_feed_mailbox_id_mailbox"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_feed")),
    )
    with op.batch_alter_table("directory_feed", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_feed_address"), ["address"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_directory_feed_mailbox_id"), ["mailbox_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_directory_feed_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("directory_feed", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_feed_state"))
        batch_op.drop_index(batch_op.f("ix_directory_feed_mailbox_id"))
        batch_op.drop_index(batch_op.f("ix_directory_feed_address"))
    op.drop_table("directory_feed")
