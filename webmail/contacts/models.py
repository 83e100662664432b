"""Tables of the personal address book: a contact is one address of the trust space with a
name and a note, owned by one account; a group is a named set of that account's contacts
(vCard ``CATEGORIES`` on export and import)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class Contact(Base):
    """One address in someone's address book (``address`` stored in lower case)."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("account_id", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(254))
    note: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ContactGroup(Base):
    """A named group of one account's contacts ("Cardiologues du secteur")."""

    __tablename__ = "contact_group"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"),
                                            index=True)
    name: Mapped[str] = mapped_column(String(80))


class ContactGroupMember(Base):
    """A contact in a group (both of the same account: ``book`` checks it)."""

    __tablename__ = "contact_group_member"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("contact_group.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True, index=True)
