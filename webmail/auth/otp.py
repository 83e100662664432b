"""One-time codes, the second factor of a password login.

E-mail and SMS codes: 6 random digits, valid 5 minutes, for one use, at most ``MAX_ATTEMPTS``
tries per code, resent at most every ``RESEND_AFTER`` and ``MAX_SENDS`` times. Only a keyed hash
of the code is kept (in the server-side session), compared in constant time; the code itself is
never logged and never in a URL. TOTP (RFC 6238, authenticator app): the seed is stored
encrypted with a key derived from the data directory's secret, and a time step is accepted once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from core.errors import ConfigError
from trust_space.models import Account, OtpChannel
from webmail.models import TotpUse

CODE_TTL_SECONDS = 300
MAX_ATTEMPTS = 5
RESEND_AFTER_SECONDS = 60
MAX_SENDS = 5
ISSUER = "Messagerie sécurisée de santé"


class CodeResult(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass
class Challenge:
    """A pending second factor, kept in the server-side session as a dict."""

    account_id: int
    channel: str
    salt: str
    code_hash: str  # "" for TOTP
    expires: float  # POSIX time
    hint: str = ""  # masked destination shown to the user
    attempts: int = 0
    sends: int = 1
    last_sent: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Challenge:
        """The challenge ``to_dict`` gave, back from the session's JSON."""
        return cls(**data)


def _hash(key: bytes, salt: str, code: str) -> str:
    return hmac.new(key, f"{salt}:{code}".encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(10**6):06d}"


def start(account: Account, channel: OtpChannel, hint: str, key: bytes,
          now: datetime) -> tuple[Challenge, str | None]:
    """A challenge for ``account`` and the code to send (None for TOTP)."""
    salt = secrets.token_hex(8)
    code = None if channel is OtpChannel.TOTP else new_code()
    challenge = Challenge(account.id, channel.value, salt,
                          _hash(key, salt, code) if code else "",
                          now.timestamp() + CODE_TTL_SECONDS, hint, last_sent=now.timestamp())
    return challenge, code


def start_email(key: bytes, now: datetime) -> tuple[Challenge, str]:
    """An e-mail code not tied to an account (registration: the code to the usual address
    that proves who asks, ``webmail.register.views``) and the code to send."""
    return start_code(OtpChannel.EMAIL, key, now)


def start_code(channel: OtpChannel, key: bytes, now: datetime, account_id: int = 0,
               hint: str = "") -> tuple[Challenge, str]:
    """An e-mail or SMS code that proves a destination rather than logs in (a new mobile or
    usual address, a forgotten password) and the code to send."""
    salt = secrets.token_hex(8)
    code = new_code()
    return Challenge(account_id, channel.value, salt, _hash(key, salt, code),
                     now.timestamp() + CODE_TTL_SECONDS, hint, last_sent=now.timestamp()), code


def renew(challenge: Challenge, key: bytes, now: datetime) -> str | None:
    """A new code for a resend, or None when resending is not allowed yet (or any more)."""
    if challenge.channel == OtpChannel.TOTP.value or challenge.sends >= MAX_SENDS:
        return None
    if now.timestamp() - challenge.last_sent < RESEND_AFTER_SECONDS:
        return None
    code = new_code()
    challenge.code_hash = _hash(key, challenge.salt, code)
    challenge.expires = now.timestamp() + CODE_TTL_SECONDS
    challenge.attempts = 0
    challenge.sends += 1
    challenge.last_sent = now.timestamp()
    return code


def check(challenge: Challenge, code: str, key: bytes, now: datetime) -> CodeResult:
    """Check an e-mail/SMS code; counts the attempt."""
    if challenge.attempts >= MAX_ATTEMPTS:
        return CodeResult.EXHAUSTED
    if now.timestamp() > challenge.expires:
        return CodeResult.EXPIRED
    challenge.attempts += 1
    given = _hash(key, challenge.salt, code.strip())
    return CodeResult.OK if hmac.compare_digest(given, challenge.code_hash) else CodeResult.WRONG


# ---------------------------------------------------------------- TOTP
def _fernet(secret: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"mss webmail totp seed").derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def new_totp_seed() -> str:
    """A fresh base32 seed (160 bits, RFC 4226 §4 R6)."""
    return pyotp.random_base32(32)


def seal_seed(seed: str, secret: bytes) -> str:
    """The seed encrypted for ``Account.totp_secret``."""
    return _fernet(secret).encrypt(seed.encode()).decode("ascii")


def open_seed(sealed: str, secret: bytes) -> str:
    """The seed of ``Account.totp_secret``.

    Raises:
        ConfigError: it was sealed with another data directory secret.
    """
    try:
        return _fernet(secret).decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise ConfigError("Secret TOTP illisible (clé du répertoire de données changée ?)") \
            from exc


def provisioning_uri(seed: str, login: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(seed).provisioning_uri(name=login, issuer_name=ISSUER)


def totp_step(seed: str, code: str, now: datetime) -> int | None:
    """The time step ``code`` belongs to (now ± 30 s, RFC 6238 §5.2), or None."""
    totp = pyotp.TOTP(seed)
    code = code.strip()
    for offset in (-1, 0, 1):
        moment = now.timestamp() + offset * totp.interval
        if hmac.compare_digest(totp.at(moment), code):
            return int(totp.timecode(moment))
    return None


def accept_totp(session: Session, account: Account, seed: str, code: str,
                now: datetime) -> bool:
    """True when ``code`` is valid and its time step has not been used yet (then recorded)."""
    step = totp_step(seed, code, now)
    if step is None:
        return False
    used = session.get(TotpUse, account.id)
    if used is not None and step <= used.last_step:
        return False
    if used is None:
        session.add(TotpUse(account_id=account.id, last_step=step))
    else:
        used.last_step = step
    session.flush()
    return True


# ---------------------------------------------------------------- display
def mask_email(address: str) -> str:
    """``m•••@exemple.fr``: enough to recognise one's address, not to read it."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def mask_phone(number: str) -> str:
    """Only the last two digits: ``•• •• •• •• 01``."""
    digits = "".join(c for c in number if c.isdigit())
    return "•• •• •• •• " + digits[-2:]
