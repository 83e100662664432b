"""Tables of the webmail: server-side sessions and TOTP replay protection.

A browser holds only an opaque random token in its cookie; the row is keyed by the token's
SHA-256, so a copy of the database does not yield usable cookies. Everything the webmail keeps
between requests (who is logged in, the registration wizard's data, a pending one-time code's
hash) lives in ``data``. Rows of an account can be listed ("sessions actives") and deleted
("déconnecter partout"); a row not seen for ``session_timeout_minutes`` is dead
(MSSanté SC.SSI/IE.58).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class WebSession(Base):
    """One browser session (see the module docstring)."""

    __tablename__ = "web_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(token) hex
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    login_method: Mapped[str] = mapped_column(String(16), default="")  # card / email / sms / totp
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    remote_addr: Mapped[str] = mapped_column(String(45), default="")


class TotpUse(Base):
    """The last TOTP time step accepted for an account: a code is accepted once only
    (RFC 6238 §5.2), even from another browser."""

    __tablename__ = "totp_use"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    last_step: Mapped[int] = mapped_column(Integer, default=0)
