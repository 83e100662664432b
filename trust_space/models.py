"""The trust space's directory, in its own words (CONVENTIONS.md, 11).

``Professional`` (RPPS/ADELI), ``Structure`` (FINESS), ``Mailbox`` (BAL: personal /
organisational / applicative), ``Delegation`` (roles on a mailbox), ``Operator`` and
``TrustedDomain`` (the whitelist), ``Account`` (how someone logs in), ``DirectoryFeed`` (what
the national directory is still to be told).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime, utcnow


class MailboxKind(enum.StrEnum):
    PERSONAL = "personal"
    ORGANISATIONAL = "organisational"
    APPLICATIVE = "applicative"


class MailboxState(enum.StrEnum):
    PENDING_VALIDATION = "pending_validation"
    PUBLISHED = "published"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Role(enum.StrEnum):
    ADMINISTRATOR = "administrator"
    MANAGER = "manager"
    USER = "user"


class AccountKind(enum.StrEnum):
    PROFESSIONAL = "professional"  # a person: logs in with password + code or CPS card
    APPLICATIVE = "applicative"  # practice software bound to an applicative mailbox
    SERVICE = "service"  # mss's own components (the webmail submitting on behalf of users)


class AccountState(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class OtpChannel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    TOTP = "totp"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings (no native PG enum types): simpler migrations, same on SQLite.
    return Enum(cls, name=name, native_enum=False, length=32,
                values_callable=lambda e: [m.value for m in e])


class Structure(Base):
    """A health structure (pharmacy, clinic, practice), identified by its FINESS number."""

    __tablename__ = "structure"

    id: Mapped[int] = mapped_column(primary_key=True)
    finess: Mapped[str | None] = mapped_column(String(9), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300), default="")
    postal_code: Mapped[str] = mapped_column(String(5), default="", index=True)
    city: Mapped[str] = mapped_column(String(120), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    mailboxes: Mapped[list[Mailbox]] = relationship(back_populates="structure")


class Professional(Base):
    """A health professional, identified by RPPS (11 digits) or ADELI (9 digits)."""

    __tablename__ = "professional"

    id: Mapped[int] = mapped_column(primary_key=True)
    rpps: Mapped[str | None] = mapped_column(String(11), unique=True)
    adeli: Mapped[str | None] = mapped_column(String(9), unique=True)
    civility: Mapped[str] = mapped_column(String(10), default="")
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100), index=True)
    profession: Mapped[str] = mapped_column(String(100), default="", index=True)
    specialty: Mapped[str] = mapped_column(String(100), default="")
    usual_email: Mapped[str] = mapped_column(String(254), default="")
    mobile: Mapped[str] = mapped_column(String(20), default="")
    phone: Mapped[str] = mapped_column(String(20), default="")
    place_of_practice: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    postal_code: Mapped[str] = mapped_column(String(5), default="", index=True)
    city: Mapped[str] = mapped_column(String(120), default="", index=True)
    birth_day: Mapped[int | None] = mapped_column(Integer)
    birth_month: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    delegations: Mapped[list[Delegation]] = relationship(back_populates="professional")
    account: Mapped[Account | None] = relationship(back_populates="professional")

    @property
    def national_id(self) -> str:
        """The CPS national identifier: "8" + RPPS, or "0" + ADELI."""
        if self.rpps:
            return "8" + self.rpps
        if self.adeli:
            return "0" + self.adeli
        return ""

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Operator(Base):
    """A peer operator of the trust space, known by its certificate's subject DN."""

    __tablename__ = "operator"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    certificate_dn: Mapped[str] = mapped_column(String(500), unique=True)
    responsible_contact: Mapped[str] = mapped_column(String(254), default="")
    support_contact: Mapped[str] = mapped_column(String(254), default="")

    domains: Mapped[list[TrustedDomain]] = relationship(back_populates="operator")


class TrustedDomain(Base):
    """A whitelist entry: a domain of a peer operator, and where its relay listens."""

    __tablename__ = "trusted_domain"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(String(500), default="")
    certificate_dn: Mapped[str] = mapped_column(String(500))
    responsible_contact: Mapped[str] = mapped_column(String(254), default="")
    support_contact: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # DateMAJ
    relay_host: Mapped[str | None] = mapped_column(String(253))
    relay_port: Mapped[int | None] = mapped_column(Integer)

    operator: Mapped[Operator] = relationship(back_populates="domains")


class Mailbox(Base):
    """A secure mailbox (BAL). Local when ``operator_id`` is None; otherwise a peer's,
    known from its published directory (for look-up and encryption only)."""

    __tablename__ = "mailbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    kind: Mapped[MailboxKind] = mapped_column(_enum(MailboxKind, "mailbox_kind"))
    state: Mapped[MailboxState] = mapped_column(
        _enum(MailboxState, "mailbox_state"), default=MailboxState.PENDING_VALIDATION, index=True
    )
    display_name: Mapped[str] = mapped_column(String(200), default="")
    professional_id: Mapped[int | None] = mapped_column(
        ForeignKey("professional.id", ondelete="SET NULL"), index=True
    )
    structure_id: Mapped[int | None] = mapped_column(
        ForeignKey("structure.id", ondelete="SET NULL"), index=True
    )
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operator.id", ondelete="CASCADE"))
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)
    mobile_published: Mapped[bool] = mapped_column(Boolean, default=False)
    dematerialisation: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_usual_email: Mapped[bool] = mapped_column(Boolean, default=False)
    quota_mb: Mapped[int | None] = mapped_column(Integer)
    # issue #19: the mail-store host (a name of MSS_MAIL_STORES) holding a local mailbox's
    # mail; NULL: the default store (the first). Read by Dovecot's SQL passdb (mailstore.sql)
    # and the gateways' LMTP routing (mailstore.stores).
    mail_store: Mapped[str | None] = mapped_column(String(32))
    # The mailbox's current S/MIME certificate (PEM) and, for local mailboxes, its private key
    # encrypted at rest with the data directory's secret (PKCS#8, BestAvailableEncryption).
    smime_cert_pem: Mapped[str | None] = mapped_column(Text)
    smime_key_pem: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    professional: Mapped[Professional | None] = relationship()
    structure: Mapped[Structure | None] = relationship(back_populates="mailboxes")
    operator: Mapped[Operator | None] = relationship()
    delegations: Mapped[list[Delegation]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan"
    )

    @property
    def is_local(self) -> bool:
        return self.operator_id is None

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[-1]


class Delegation(Base):
    """A professional's role on a (usually organisational) mailbox."""

    __tablename__ = "delegation"
    __table_args__ = (UniqueConstraint("mailbox_id", "professional_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("professional.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "delegation_role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    mailbox: Mapped[Mailbox] = relationship(back_populates="delegations")
    professional: Mapped[Professional] = relationship(back_populates="delegations")


class Account(Base):
    """How someone (or something) logs in: password hash, one-time-code channel, lock-out."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(254), unique=True)
    kind: Mapped[AccountKind] = mapped_column(_enum(AccountKind, "account_kind"))
    state: Mapped[AccountState] = mapped_column(
        _enum(AccountState, "account_state"), default=AccountState.ACTIVE
    )
    professional_id: Mapped[int | None] = mapped_column(
        ForeignKey("professional.id", ondelete="CASCADE"), unique=True
    )
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    password_hash: Mapped[str | None] = mapped_column(String(255))  # argon2id, PHC string
    otp_channel: Mapped[OtpChannel] = mapped_column(
        _enum(OtpChannel, "otp_channel"), default=OtpChannel.EMAIL
    )
    totp_secret: Mapped[str | None] = mapped_column(String(255))  # encrypted at rest
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Wrong one-time codes (webmail code, operator TOTP), counted apart from password failures
    # so that a correct password does not reset them (issue #14, item 4); reset only by a
    # complete login or the lock's expiry. Either counter reaching the limit sets the lock.
    code_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    professional: Mapped[Professional | None] = relationship(back_populates="account")
    mailbox: Mapped[Mailbox | None] = relationship()


class AppPassword(Base):
    """A per-device IMAP/SMTP password ("Logiciel du cabinet", "Thunderbird bureau").

    The password is ``<prefix>-<secret>``: ``prefix`` (public, unique) selects this row in one
    indexed look-up, including Dovecot's SQL passdb; ``secret_hash`` is the hex SHA-256 of the
    whole password. A fast hash is enough because mss generates the secret with 130 bits of
    entropy (no dictionary to try); it is shown once and never stored in clear.
    """

    __tablename__ = "app_password"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(8), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    account: Mapped[Account] = relationship()


# ------------------------------------------------------------------ national directory feed
class FeedEvent(enum.StrEnum):
    """A mailbox life-cycle event the national directory (Annuaire Santé) is told about."""

    PUBLISHED = "published"
    LISTE_ROUGE_ON = "liste_rouge_on"
    LISTE_ROUGE_OFF = "liste_rouge_off"
    CLOSED = "closed"


class FeedState(enum.StrEnum):
    PENDING = "pending"  # to send (again) from ``next_attempt_at``
    SENDING = "sending"  # leased by a worker until ``lease_until``
    SENT = "sent"  # 2xx
    NOT_FOUND = "not_found"  # 404: no practitioner / organisation with this identifier
    PRECONDITION_FAILED = "precondition_failed"  # 412: the identifier matched several
    FAILED = "failed"  # another refusal, too many attempts, or a patch that could not be built
    RESOLVED = "resolved"  # an operator settled it by hand


class DirectoryFeed(Base):
    """One FHIR Patch for the national directory, queued in the transaction of the mailbox
    change it describes (``trust_space.annuaire``). ``resource`` and ``identifier`` make the
    conditional URL (``PATCH [base]/<resource>?identifier=<identifier>``); ``body`` is the
    ``Parameters`` resource, as sent. Rows of one address are sent in ``id`` order."""

    __tablename__ = "directory_feed"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailbox.id", ondelete="SET NULL"), index=True)
    address: Mapped[str] = mapped_column(String(254), index=True)
    event: Mapped[FeedEvent] = mapped_column(_enum(FeedEvent, "feed_event"))
    resource: Mapped[str] = mapped_column(String(20))
    identifier: Mapped[str] = mapped_column(String(120), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[FeedState] = mapped_column(
        _enum(FeedState, "feed_state"), default=FeedState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)  # HTTP status, None: no answer
    last_answer: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
