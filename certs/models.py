"""The CA's ledger: every certificate it issued, and its revocation state (feeds the CRL)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class CertKind(enum.StrEnum):
    SERVER = "server"
    MAILBOX = "mailbox"  # S/MIME certificate of a mailbox (SAN rfc822Name)
    CARD = "card"  # CPS-style card certificate (national id in the subject)
    CLIENT = "client"  # applicative mailbox / service client certificate
    OPERATOR = "operator"  # an operator's relay certificate (mutual TLS between operators)


class IssuedCertificate(Base):
    __tablename__ = "issued_certificate"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # hex, lower case
    kind: Mapped[CertKind] = mapped_column(
        Enum(CertKind, name="cert_kind", native_enum=False, length=16,
             values_callable=lambda e: [m.value for m in e])
    )
    subject: Mapped[str] = mapped_column(String(500))  # RFC 4514 string
    subject_key: Mapped[str] = mapped_column(String(254), index=True)  # address, host or nat. id
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    pem: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
