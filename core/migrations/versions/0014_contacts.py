"""personal contacts and groups

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 08:00:00.000000

Issue #17: each professional's own address book (``webmail.contacts``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name=op.f("fk_contact_account_id_account"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact")),
        sa.UniqueConstraint("account_id", "address", name=op.f("uq_contact_account_id")),
    )
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_account_id"), ["account_id"], unique=False)
    op.create_table(
        "contact_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name=op.f("fk_contact_group_account_id_account"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_group")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_contact_group_account_id")),
    )
    with op.batch_alter_table("contact_group", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_group_account_id"), ["account_id"],
                              unique=False)
    op.create_table(
        "contact_group_member",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contact.id"],
                                name=op.f("fk_contact_group_member_contact_id_contact"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["contact_group.id"],
                                name=op.f("fk_contact_group_member_group_id_contact_group"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "contact_id", name=op.f("pk_contact_group_member")),
    )
    with op.batch_alter_table("contact_group_member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_group_member_contact_id"), ["contact_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contact_group_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_group_member_contact_id"))
    op.drop_table("contact_group_member")
    with op.batch_alter_table("contact_group", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_group_account_id"))
    op.drop_table("contact_group")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_account_id"))
    op.drop_table("contact")
