"""peer probe

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14 10:00:00.000000

Issue #20, the trust space's health: ``peer_probe`` keeps what each probe of a peer operator's
relay showed per whitelisted domain — reached or the precise failure, TLS protocol and suite,
the certificate's subject against the whitelist's DN, chain, revocation, end of validity
(``gateway.probe``, ``peers.health``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peer_probe",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", core.db.UTCDateTime(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("failure", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("tls_version", sa.String(length=16), nullable=False),
        sa.Column("cipher", sa.String(length=100), nullable=False),
        sa.Column("subject_dn", sa.String(length=500), nullable=False),
        sa.Column("expected_dn", sa.String(length=500), nullable=False),
        sa.Column("dn_match", sa.Boolean(), nullable=True),
        sa.Column("chain", sa.String(length=16), nullable=False),
        sa.Column("chain_detail", sa.String(length=500), nullable=False),
        sa.Column("revocation", sa.String(length=16), nullable=False),
        sa.Column("revocation_detail", sa.String(length=500), nullable=False),
        sa.Column("not_after", core.db.UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=254), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peer_probe")),
    )
    with op.batch_alter_table("peer_probe") as batch:
        batch.create_index(batch.f("ix_peer_probe_at"), ["at"], unique=False)
        batch.create_index("ix_peer_probe_domain_id", ["domain", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("peer_probe")
