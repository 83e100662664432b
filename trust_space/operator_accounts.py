"""The operator's own accounts: the people who run this relay (operator pages of the webmail),
created by ``mss account operator`` and by the demo. Their second factor is always TOTP.

Like ``trust_space.accounts``, this writes to the caller's session, never commits and does not
audit: the caller records the outcome (CONVENTIONS.md, 6).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from trust_space.accounts import AccountActionRefused, create_account, find_account, set_password
from trust_space.models import Account, AccountKind, OtpChannel


def ensure_operator(session: Session, login: str, sealed_seed: str, *,
                    password: str | None = None, password_hash: str | None = None) -> Account:
    """Create or update the operator account ``login``, its second factor the TOTP seed
    ``sealed_seed`` (as ``Account.totp_secret`` keeps it: sealed with the data directory's
    secret by the caller, who shows the seed once). ``password`` is checked for strength,
    ``password_hash`` is taken as it is (the demo's shared password).

    Raises:
        AccountActionRefused: ``login`` is a professional's account. WeakPassword: a weak
        ``password``.
    """
    found = find_account(session, login)
    if found is not None and not found.is_operator and found.professional_id is not None:
        raise AccountActionRefused(f"« {login} » est le compte d'un professionnel, pas d'un "
                                   "opérateur")
    if found is None:
        found = create_account(session, login=login, kind=AccountKind.PROFESSIONAL)
    if password is not None:
        set_password(found, password)
    elif password_hash is not None:
        found.password_hash = password_hash
    found.is_operator = True
    found.otp_channel = OtpChannel.TOTP
    found.totp_secret = sealed_seed
    return found
