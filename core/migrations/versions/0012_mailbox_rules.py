"""mailbox rules: out-of-office reply and filters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-16 10:00:00.000000

Issue #17: ``mailbox_rules`` keeps what a mailbox's « Réponse automatique » and « Filtres »
forms hold (``webmail.mail.mailrules``); the Sieve script generated from it lives in the mail
store.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_rules",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("vacation_on", sa.Boolean(), nullable=False),
        sa.Column("vacation_start", sa.Date(), nullable=True),
        sa.Column("vacation_end", sa.Date(), nullable=True),
        sa.Column("vacation_subject", sa.String(length=200), nullable=False),
        sa.Column("vacation_body", sa.Text(), nullable=False),
        sa.Column("vacation_days", sa.Integer(), nullable=False),
        sa.Column("filters", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(length=254), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"],
                                name=op.f("fk_mailbox_rules_mailbox_id_mailbox"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id", name=op.f("pk_mailbox_rules")),
    )


def downgrade() -> None:
    op.drop_table("mailbox_rules")
