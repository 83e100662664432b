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
- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's format) with a Pro Santé Connect access token
  (référentiel #2 Clients, ECO.1.2.1): introspected at the provider (``core.oidc``: active, our
  client or an accepted practice software, acr, a national id), never stored (ECO.1.2.5); the
  national id opens the professional's account as a card does (``card_holder``). For EXTERNAL
  and tokens alike, an authzid must be a mailbox the identity may use
  (``trust_space.policy.may_authorise``: its own, or an organisational one by delegation).
  A refused token counts in the account's one lock-out like a wrong password, except when
  the provider did not answer (``454 4.7.0``, nothing counted).

These functions are synchronous (argon2, database): the SMTP handler runs them in a thread.
Every attempt is audited with the login, the mechanism and the outcome; never a password.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from sqlalchemy.orm import Session

from certs._x509util import email_addresses
from certs.errors import CertError, WrongPurpose
from certs.validation import TrustStore, card_identity, validate
from core import audit
from core.db import Database, utcnow
from core.oidc import Provider, TokenInfo, TokenRefused
from core.settings import Settings
from gateway.errors import AuthRefused, AuthUnavailable, TokenAuthRefused
from trust_space.accounts import card_holder, find_account, record_protocol_failure
from trust_space.app_passwords import authenticate_protocol
from trust_space.errors import AuthenticationFailed
from trust_space.models import Account, AccountKind, AccountState
from trust_space.policy import Identity, mailbox_identity, may_authorise

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


def _acting_as(session: Session, account: Account, authzid: str,
               mechanism: str) -> tuple[Authenticated | None, str | None]:
    if not authzid or authzid.lower() == account.login:
        return Authenticated(Identity.from_account(account), account.login, mechanism), None
    if account.kind is not AccountKind.SERVICE:  # only the webmail may act for someone
        return None, "authzid_not_allowed"
    target = find_account(session, authzid)
    if target is None:  # an organisational mailbox, for its own out-of-office reply
        mailbox = mailbox_identity(session, authzid)
        if mailbox is not None:
            return Authenticated(mailbox, account.login, f"{mechanism}+authzid"), None
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
            else:
                identity = Identity.from_account(account)
                decision = may_authorise(session, identity, authzid)
                if decision:
                    result = Authenticated(identity, account.login, "EXTERNAL")
                else:
                    failure = "authzid_not_allowed" if authzid else decision.code
        audit.record(session, actor=(result.login if result else subject)[:254],
                     action="smtp.auth", target=authzid or subject[:254],
                     outcome=failure or "ok", request={"mechanism": "EXTERNAL", "peer": peer})
    if result is None:
        raise AuthRefused(text, code=f"auth_{failure}")
    return result


def _certificate_account(session: Session, store: TrustStore,
                         cert: x509.Certificate | None) -> Account | None:
    if cert is None:
        raise WrongPurpose("aucun certificat client présenté")
    validate(cert, store, purpose="client")
    try:
        card = card_identity(cert)
    except WrongPurpose:  # not a card: an applicative certificate, named by its address
        addresses = email_addresses(cert)
        account = find_account(session, addresses[0]) if addresses else None
        return account if account is not None and \
            account.kind is AccountKind.APPLICATIVE else None
    return card_holder(session, card.national_id)


# ---------------------------------------------------------------------- tokens (RFC 7628)
# RFC 6750 §2.1 b64token; a PSC access token is a JWT of 1-2 kB (RFC 4954 §4: 12288 octets).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{1,8000}=*")
_KEY = re.compile(r"[A-Za-z]+")  # RFC 7628 §3.1: key = 1*(ALPHA)


@dataclass(frozen=True)
class Bearer:
    """A client's OAUTHBEARER or XOAUTH2 response, read (never logged: see ``__repr__``)."""

    authzid: str
    token: str

    def __repr__(self) -> str:
        return f"Bearer(authzid={self.authzid!r})"


def parse_oauthbearer(blob: bytes) -> Bearer:
    """RFC 7628 §3.1: ``gs2-header ^A *(key=value ^A) ^A`` with ``auth=Bearer <token>``, the
    gs2-header being ``n,`` or ``y,`` then an optional ``a=<authzid>`` and ``,`` (RFC 5801 §4;
    ``=2C`` and ``=3D`` escape ``,`` and ``=``).

    Raises:
        ValueError: not of that form, channel binding asked (``p=``), or no Bearer token.
    """
    text = blob.decode("utf-8")
    header, _, rest = text.partition("\x01")
    flag, authzid, *tail = header.split(",")
    if flag not in ("n", "y") or tail != [""] or not rest.endswith("\x01"):
        raise ValueError("en-tête GS2 invalide")
    if authzid:
        if not authzid.startswith("a=") or re.search(r"=(?!2C|3D)", authzid[2:]):
            raise ValueError("authzid invalide")
        authzid = authzid[2:].replace("=2C", ",").replace("=3D", "=")
    pairs = _pairs(rest[:-1], strict=True)
    return Bearer(authzid, _bearer(pairs.get("auth", "")))


def parse_xoauth2(blob: bytes) -> Bearer:
    """Google's XOAUTH2: ``user=<address> ^A auth=Bearer <token> ^A ^A`` (other fields, such
    as Yahoo's ``vendor=``, are ignored).

    Raises:
        ValueError: not of that form, no user, or no Bearer token.
    """
    text = blob.decode("utf-8")
    if not text.endswith("\x01\x01"):
        raise ValueError("réponse XOAUTH2 non terminée")
    pairs = _pairs(text[:-1], strict=False)
    if not pairs.get("user"):
        raise ValueError("réponse XOAUTH2 sans utilisateur")
    return Bearer(pairs["user"], _bearer(pairs.get("auth", "")))


def _pairs(text: str, *, strict: bool) -> dict[str, str]:
    """``key=value^A`` repeated (each pair ends with ^A)."""
    if text and not text.endswith("\x01"):
        raise ValueError("paire non terminée")
    pairs: dict[str, str] = {}
    for item in text.split("\x01")[:-1]:
        key, eq, value = item.partition("=")
        if not eq or (strict and not _KEY.fullmatch(key)) or key in pairs:
            raise ValueError("paire clé=valeur invalide")
        pairs[key] = value
    return pairs


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
        raise ValueError("jeton Bearer absent ou mal formé")
    return token


def token_error(settings: Settings, mechanism: str, status: str) -> str:
    """The error a refused token gets as a challenge: RFC 7628 §3.2.2's for OAUTHBEARER (the
    provider's discovery document tells the client where to get a new token), Google's for
    XOAUTH2."""
    if mechanism == "XOAUTH2":
        fields = {"status": "401", "schemes": "bearer", "scope": settings.oidc_scope}
    else:
        fields = {"status": status, "scope": settings.oidc_scope,
                  "openid-configuration":
                      f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration"}
    return json.dumps(fields, separators=(",", ":"))


def token_login(db: Database, provider: Provider, bearer: Bearer, *, mechanism: str,
                peer: str = "", max_failures: int = 5, lock_minutes: int = 15
                ) -> Authenticated:
    """OAUTHBEARER / XOAUTH2. The token is introspected outside any transaction (network);
    a locked account is refused before the provider is even asked.

    Raises:
        TokenAuthRefused: the token does not open the mailbox asked for (counted and audited).
        AuthUnavailable: the provider did not answer (audited, not counted).
    """
    asked = bearer.authzid.strip().lower()
    info: TokenInfo | None = None
    reason = "account_locked" if asked and _locked(db, asked, utcnow()) else ""
    if not reason:
        try:
            info = provider.introspect(bearer.token)
        except TokenRefused as exc:
            reason = f"token_{exc.reason}"
    request: dict[str, object] = {"mechanism": mechanism, "peer": peer}
    with db.transaction() as session:
        account, result = None, None
        if info is not None:
            request.update(national_id=info.national_id, client=info.client_id)
            account = card_holder(session, info.national_id)
            reason, result = _token_account(session, account, asked, info, mechanism)
        login = asked or (account.login if account else "")
        if result is None and reason != "token_unavailable" and login:
            # the one lock-out of the account asked for, as a wrong password would count
            counted = record_protocol_failure(session, login, now=utcnow(),
                                              max_failures=max_failures,
                                              lock_minutes=lock_minutes)
            if counted is not None:
                request["failed_attempts"] = counted.failed_attempts
        audit.record(session, actor=(account.login if account else asked or peer)[:254],
                     action="smtp.auth", target=asked[:254] or "-", outcome=reason or "ok",
                     request=request)
    if result is not None:
        return result
    if reason == "token_unavailable":
        raise AuthUnavailable("Pro Santé Connect ne répond pas, réessayez / identity provider "
                              "unavailable, try again", code="auth_token_unavailable")
    error = TokenAuthRefused(_INVALID, code=f"auth_{reason}")
    if reason == "token_acr":
        error.status = "insufficient_user_authentication"  # RFC 9470 §3
    raise error


def _locked(db: Database, login: str, now: datetime) -> bool:
    with db.transaction() as session:
        account = find_account(session, login)
        return account is not None and account.locked_until is not None \
            and account.locked_until > now


def _token_account(session: Session, account: Account | None, asked: str, info: TokenInfo,
                   mechanism: str) -> tuple[str, Authenticated | None]:
    """The token's account acting for ``asked``: ("", result) or (failure, None)."""
    if account is None:
        return "no_account", None
    if account.locked_until is not None and account.locked_until > utcnow():
        return "account_locked", None
    identity = Identity.from_account(account)
    wanted = "" if asked in (account.login, info.national_id) else asked
    decision = may_authorise(session, identity, wanted)
    if not decision:
        return ("authzid_not_allowed" if wanted else decision.code), None
    return "", Authenticated(identity, account.login, mechanism)
