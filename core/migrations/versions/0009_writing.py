"""writing: held messages, undo delay, signatures

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15 10:00:00.000000

Issue #17, writing in the webmail: ``held_message`` keeps a sent message for its "Annuler"
window and until a webmail process has submitted it (``webmail.mail.outbox``);
``writing_preference`` the person's undo delay; ``mail_signature`` their signature per mailbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("compose_id", sa.String(length=40), nullable=False),
        sa.Column("login", sa.String(length=254), nullable=False),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=254), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=250), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("drafts_folder", sa.String(length=400), nullable=False),
        sa.Column("draft_uid", sa.Integer(), nullable=True),
        sa.Column("reply_folder", sa.String(length=400), nullable=False),
        sa.Column("reply_uid", sa.Integer(), nullable=True),
        sa.Column("sent_folder", sa.String(length=400), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("due_at", core.db.UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=80), nullable=False),
        sa.Column("lease_until", core.db.UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", core.db.UTCDateTime(), nullable=True),
        sa.Column("queue_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=600), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name=op.f("fk_held_message_account_id_account"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_message")),
        sa.UniqueConstraint("account_id", "compose_id",
                            name=op.f("uq_held_message_account_id")),
    )
    with op.batch_alter_table("held_message") as batch:
        batch.create_index(batch.f("ix_held_message_due_at"), ["due_at"], unique=False)
        batch.create_index(batch.f("ix_held_message_state"), ["state"], unique=False)
    op.create_table(
        "writing_preference",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("undo_seconds", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name=op.f("fk_writing_preference_account_id_account"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_writing_preference")),
    )
    op.create_table(
        "mail_signature",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name=op.f("fk_mail_signature_account_id_account"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"],
                                name=op.f("fk_mail_signature_mailbox_id_mailbox"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "mailbox_id", name=op.f("pk_mail_signature")),
    )


def downgrade() -> None:
    op.drop_table("mail_signature")
    op.drop_table("writing_preference")
    with op.batch_alter_table("held_message") as batch:
        batch.drop_index(batch.f("ix_held_message_state"))
        batch.drop_index(batch.f("ix_held_message_due_at"))
    op.drop_table("held_message")
