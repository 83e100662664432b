"""reading preference

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-15 12:00:00.000000

Issue #17, reading: ``reading_preference`` keeps whether a person's message lists group
messages by conversation (``webmail.models.ReadingPreference``, ``webmail.mail.conversations``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reading_preference",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("conversations", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_reading_preference_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_reading_preference")),
    )


def downgrade() -> None:
    op.drop_table("reading_preference")
