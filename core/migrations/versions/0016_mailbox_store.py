"""the mail-store host of each mailbox

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 02:10:00.000000

Issue #19, several mail-store hosts: ``mailbox.mail_store`` names the store (one of
``MSS_MAIL_STORES``) holding a local mailbox's mail; NULL, as for every existing mailbox, is the
default store (the first). Dovecot's SQL passdb proxies a login to that store
(``mailstore.sql``) and the gateways deliver there (``mailstore.stores``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


# A plain ALTER TABLE on both engines, not Alembic's batch mode: on SQLite that one copies the
# table, which would drop the directory_changed triggers of revision 0015.
def upgrade() -> None:
    op.add_column("mailbox", sa.Column("mail_store", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("mailbox", "mail_store")
