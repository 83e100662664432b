"""application passwords; one-time-code failures counted apart from password failures

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 21:40:00.000000

Issue #14: ``app_password`` holds the per-device IMAP/SMTP passwords (hashed); the
``account.code_failures`` counter makes wrong one-time codes survive a correct password.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_password",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_app_password_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_password")),
        sa.UniqueConstraint("prefix", name=op.f("uq_app_password_prefix")),
    )
    with op.batch_alter_table("app_password", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_app_password_account_id"), ["account_id"],
                              unique=False)
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_failures", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("code_failures")
    with op.batch_alter_table("app_password", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_password_account_id"))
    op.drop_table("app_password")
