"""counters with an expiry shared by every webmail process

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 05:10:00.000000

Issue #19: the webmail's request limits per address (Flask-Limiter) and its per-identifier
guards (unknown identifiers' lock-outs, the password reset's limits) were counted in each
process's memory; ``window_count`` holds them for every process (``core.counters``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "window_count",
        sa.Column("key", sa.String(length=254), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_window_count")),
    )


def downgrade() -> None:
    op.drop_table("window_count")
