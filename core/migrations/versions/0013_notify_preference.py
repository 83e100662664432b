"""notify preference

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-15 12:00:00.000000

Issue #17, new mail without reloading: ``notify_preference`` keeps whether a person wants the
browser's desktop notifications of new mail, and whether with the sender and the subject
(``webmail.mail.notify``; no row: both off).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_preference",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("browser", sa.Boolean(), nullable=False),
        sa.Column("details", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_notify_preference_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_notify_preference")),
    )


def downgrade() -> None:
    op.drop_table("notify_preference")
