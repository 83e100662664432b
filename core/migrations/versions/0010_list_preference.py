"""list preference

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-15 10:00:00.000000

Issue #17, the message list: ``list_preference`` keeps each person's page size (25, 50 or 100
messages) and whether the keyboard shortcuts are on (``webmail.mail.preferences``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "list_preference",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("page_size", sa.Integer(), nullable=False),
        sa.Column("shortcuts", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_list_preference_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_list_preference")),
    )


def downgrade() -> None:
    op.drop_table("list_preference")
