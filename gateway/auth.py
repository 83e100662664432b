"""SMTP AUTH (RFC 4954) for the submission ports: who is submitting.

- PLAIN (RFC 4616) and LOGIN with an application password (``trust_space.app_passwords``);
  the account's own password only for practice software, service accounts, and persons when
  ``imap_smtp_web_password`` is on — never an operator's (issue #14). Lock-out: the failure
  counter (shared with the webmail and IMAP) is written inside the transaction, which commits
  with the audit record; the audit names the application password by name and prefix.
- PLAIN with an authorisation identity (authzid): accepted only when the authenticated
  account is a SERVICE account — the webmail, logged in as itself, submitting for a user it
  has authenticated. The resulting identity is the user's; the audit names both.
- EXTERNAL (RFC 4422 appendix A) with the TLS client certificate: a CPS-style card
  certificate maps to the professional's account by national id, an applicative client
  certificate to the applicative account by its rfc822Name. The chain and the CRL are checked
  here (``certs.validation``): a revoked certificate gets ``535 5.7.8`` with the reason.

These functions are synchronous (argon2, database): the SMTP handler runs them in a thread.
Every attempt is audited with the login, the mechanism and the outcome; never a password.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from certs._x509util import email_addresses
from certs.errors import CertError, WrongPurpose
from certs.validation import TrustStore, card_identity, validate
from core import audit
from core.db import Database
from gateway.errors import AuthRefused
from trust_space.accounts import find_account
from trust_space.app_passwords import authenticate_protocol
from trust_space.errors import AuthenticationFailed
from trust_space.models import Account, AccountKind, AccountState
from trust_space.policy import Identity

_INVALID = "Identifiants refusés / authentication credentials invalid"
# Shown for every PLAIN/LOGIN refusal, right password or not: a hint, never an oracle.
_INVALID_PASSWORD = ("Identifiants refusés : utilisez un mot de passe d'application (Mon "
                     "compte) / invalid credentials: use an application password")


@dataclass(frozen=True)
class Authenticated:
    """The outcome of AUTH: ``identity`` sends; ``login`` authenticated (they differ for the
    webmail acting for a user)."""

    identity: Identity
    login: str
    mechanism: str


def password_login(db: Database, login: str, password: str, authzid: str = "", *,
                   mechanism: str = "PLAIN", peer: str = "", max_failures: int = 5,
                   lock_minutes: int = 15, web_password: bool = False) -> Authenticated:
    """PLAIN / LOGIN. ``web_password``: the ``imap_smtp_web_password`` setting.

    Raises:
        AuthRefused: wrong or not accepted password, unknown, locked or suspended account, or
            an authzid the account may not use.
    """
    failure: str | None = None
    result: Authenticated | None = None
    request: dict[str, str] = {"mechanism": mechanism, "peer": peer}
    with db.transaction() as session:
        try:
            found = authenticate_protocol(session, login, password, web_password=web_password,
                                          max_failures=max_failures,
                                          lock_minutes=lock_minutes)
        except AuthenticationFailed as exc:  # inside: the failure counter must be committed
            failure = exc.code
        else:
            if found.app_password is not None:  # which device: its name and public prefix
                request.update(app_password=found.app_password.name,
                               app_password_prefix=found.app_password.prefix)
            result, failure = _acting_as(session, found.account, authzid, mechanism)
        audit.record(session, actor=login[:254], action="smtp.auth", target=authzid or login,
                     outcome=failure or "ok", request=request)
    if result is None:
        text = _INVALID if failure == "account_locked" else _INVALID_PASSWORD
        raise AuthRefused(text, code=f"auth_{failure}")
    return result


def _acting_as(session: object, account: Account, authzid: str,
               mechanism: str) -> tuple[Authenticated | None, str | None]:
    if not authzid or authzid.lower() == account.login:
        return Authenticated(Identity.from_account(account), account.login, mechanism), None
    if account.kind is not AccountKind.SERVICE:  # only the webmail may act for someone
        return None, "authzid_not_allowed"
    target = find_account(session, authzid)  # type: ignore[arg-type]
    if target is None or target.state is not AccountState.ACTIVE or \
            target.kind is AccountKind.SERVICE:
        return None, "authzid_unknown"
    return Authenticated(Identity.from_account(target), account.login,
                         f"{mechanism}+authzid"), None


def certificate_login(db: Database, store: TrustStore, cert: x509.Certificate | None,
                      authzid: str = "", *, peer: str = "") -> Authenticated:
    """EXTERNAL with the TLS client certificate.

    Raises:
        AuthRefused: no certificate, not trusted, expired, revoked, no matching account, or an
            authzid other than the certificate's account.
    """
    subject = cert.subject.rfc4514_string() if cert is not None else ""
    failure: str | None = None
    result: Authenticated | None = None
    text = _INVALID
    with db.transaction() as session:
        try:
            account = _certificate_account(session, store, cert)
        except CertError as exc:
            failure, text = exc.code, f"Certificat refusé / certificate refused : {exc.message}"
        else:
            if account is None or account.state is not AccountState.ACTIVE:
                failure = "no_account"
            elif authzid and authzid.lower() != account.login:
                failure = "authzid_not_allowed"
            else:
                result = Authenticated(Identity.from_account(account), account.login,
                                       "EXTERNAL")
        audit.record(session, actor=(result.login if result else subject)[:254],
                     action="smtp.auth", target=authzid or subject[:254],
                     outcome=failure or "ok", request={"mechanism": "EXTERNAL", "peer": peer})
    if result is None:
        raise AuthRefused(text, code=f"auth_{failure}")
    return result


def _certificate_account(session: object, store: TrustStore,
                         cert: x509.Certificate | None) -> Account | None:
    if cert is None:
        raise WrongPurpose("aucun certificat client présenté")
    validate(cert, store, purpose="client")
    try:
        card = card_identity(cert)
    except WrongPurpose:  # not a card: an applicative certificate, named by its address
        addresses = email_addresses(cert)
        account = find_account(session, addresses[0]) if addresses else None  # type: ignore[arg-type]
        return account if account is not None and \
            account.kind is AccountKind.APPLICATIVE else None
    account = find_account(session, card.national_id)  # type: ignore[arg-type]
    return account if account is not None and account.kind is AccountKind.PROFESSIONAL else None
