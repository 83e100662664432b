"""Log-in decisions that the views call: which account a card or Pro Santé Connect names,
whether an account may use the webmail, where its code goes, and lock-out counting for codes
and unknown identifiers."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from certs.validation import TrustStore, card_identity, validate
from core import counters
from trust_space.accounts import find_account
from trust_space.errors import AccountLocked, AuthenticationFailed
from trust_space.models import (
    Account,
    AccountKind,
    AccountState,
    Mailbox,
    MailboxKind,
    MailboxState,
    OtpChannel,
)
from trust_space.naming import parse_national_id
from webmail.auth.otp import mask_email, mask_phone
from webmail.errors import (
    CardLoginRefused,
    CardNotRegistered,
    DeliveryFailed,
    PscLoginRefused,
    PscNotRegistered,
)


class PendingValidation(AuthenticationFailed):
    """The right credentials, but the registration is not validated yet."""

    code = "pending_validation"

    def __init__(self) -> None:
        super().__init__("Votre inscription est en attente de validation par l'opérateur. "
                         "Vous serez prévenu par courriel dès qu'elle sera validée.")


class MailboxUnavailable(AuthenticationFailed):
    """The right credentials, but the personal mailbox is suspended or closed by the operator
    (said only after the password or the card was right: no enumeration)."""

    def __init__(self, state: MailboxState) -> None:
        self.code = f"mailbox_{state.value}"
        what = "suspendue" if state is MailboxState.SUSPENDED else "fermée"
        super().__init__(f"Votre boîte aux lettres est {what} par l'opérateur : la connexion "
                         "n'est pas possible. Contactez votre opérateur pour en savoir plus.")


def check_webmail_access(session: Session, account: Account) -> None:
    """Raise unless ``account`` is a person's active account whose mailbox is open.

    Raises:
        AuthenticationFailed: not a person's account (the generic message: no enumeration).
        PendingValidation: the personal mailbox awaits the operator's validation.
        MailboxUnavailable: the personal mailbox is suspended or closed.
    """
    if account.kind is not AccountKind.PROFESSIONAL or account.state is not AccountState.ACTIVE:
        raise AuthenticationFailed()
    if account.professional_id is None:
        return  # an operator's account, without a mailbox
    states = set(session.scalars(select(Mailbox.state).where(
        Mailbox.professional_id == account.professional_id, Mailbox.kind == MailboxKind.PERSONAL,
        Mailbox.operator_id.is_(None))))
    if states and MailboxState.PUBLISHED not in states:
        if MailboxState.PENDING_VALIDATION in states:
            raise PendingValidation()
        raise MailboxUnavailable(MailboxState.SUSPENDED if MailboxState.SUSPENDED in states
                                 else MailboxState.CLOSED)


def card_account(session: Session, pem: str | None, store: TrustStore) -> Account:
    """The account of the professional whose card certificate is ``pem``.

    Raises:
        CardLoginRefused: no certificate, or nobody's account. certs.errors.CertError:
            untrusted, expired, revoked or not a card certificate (French messages).
    """
    if not pem:
        raise CardLoginRefused("Aucune carte CPS n'a été présentée. Vérifiez que la carte est "
                               "dans le lecteur et que son logiciel est démarré, puis "
                               "rechargez la page.")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError as exc:
        raise CardLoginRefused("Le certificat présenté est illisible.") from exc
    validate(cert, store, purpose="client")
    identity = card_identity(cert)
    account = find_account(session, identity.national_id)
    if account is None or account.kind is not AccountKind.PROFESSIONAL:
        raise CardNotRegistered(  # its page offers to register with this card (issue #15)
            f"Aucun compte de messagerie n'est associé à cette carte ({identity.first_name} "
            f"{identity.last_name}, identifiant national {identity.national_id}). "
            "Vous pouvez créer votre compte avec cette carte : votre identité y est lue.")
    if account.state is not AccountState.ACTIVE:
        raise CardLoginRefused("Compte suspendu : contactez votre opérateur de messagerie.")
    return account


def psc_account(session: Session, national_id: str, name: str) -> Account:
    """The account of the professional Pro Santé Connect proved (``national_id``: 8 + RPPS or
    0 + ADELI; ``name`` for the page), on the card's rules (``card_account``).

    Raises:
        PscNotRegistered: nobody's account (its page offers to register).
        PscLoginRefused: not a national id, or the account is suspended.
    """
    if parse_national_id(national_id) is None:  # else find_account would read it as a login
        raise PscLoginRefused("identity", "Pro Santé Connect n'a pas transmis d'identifiant "
                              "national (RPPS ou ADELI) valide : connexion impossible.")
    account = find_account(session, national_id)
    if account is None or account.kind is not AccountKind.PROFESSIONAL:
        raise PscNotRegistered(
            "not_registered", f"Aucun compte de messagerie n'est associé à votre identité Pro "
            f"Santé Connect ({name}, identifiant national {national_id}). Vous pouvez créer "
            "votre compte : votre identité y est reprise de Pro Santé Connect.")
    if account.state is not AccountState.ACTIVE:
        raise PscLoginRefused("account_suspended", "Compte suspendu : contactez votre "
                              "opérateur de messagerie.")
    return account


def code_destination(account: Account) -> tuple[str, str]:
    """Where the account's code goes and how to show it: ``(destination, masked)``.

    An SMS or TOTP channel left without its destination (saved before issue #15: SMS with an
    erased number) falls back to the usual address, so that such an account is not locked
    out for good.

    Raises:
        DeliveryFailed: no usual address (e-mail) or no mobile (SMS) is known.
    """
    channel = account.otp_channel
    pro = account.professional
    if channel is OtpChannel.SMS and pro is not None and pro.mobile:
        return pro.mobile, f"par SMS au {mask_phone(pro.mobile)}"
    if channel is OtpChannel.TOTP and account.totp_secret:
        return "", "dans votre application d'authentification"
    if pro is not None and pro.usual_email:
        return pro.usual_email, f"par courriel à {mask_email(pro.usual_email)}"
    raise DeliveryFailed("Aucun moyen de vous envoyer un code de connexion n'est enregistré "
                         "(adresse habituelle, mobile ou application). Connectez-vous avec "
                         "votre carte CPS ou contactez votre opérateur.")


def code_channel(account: Account) -> OtpChannel:
    """The channel ``code_destination`` really uses (e-mail when the chosen one has lost its
    destination)."""
    pro = account.professional
    if account.otp_channel is OtpChannel.SMS and not (pro and pro.mobile):
        return OtpChannel.EMAIL
    if account.otp_channel is OtpChannel.TOTP and not account.totp_secret:
        return OtpChannel.EMAIL
    return account.otp_channel


def minutes_until(moment: datetime, now: datetime) -> int:
    """Whole minutes left until ``moment``, rounded up, at least 1."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(1, math.ceil((moment - now).total_seconds() / 60))


def minutes_fr(count: int) -> str:
    return f"{count} minute" if count == 1 else f"{count} minutes"


def locked_message(locked_until: datetime, now: datetime) -> str:
    """The lock-out refusal, with how long it lasts and the way out (issue #15 item 2)."""
    return ("Accès temporairement bloqué après plusieurs échecs de connexion ; réessayez dans "
            f"{minutes_fr(minutes_until(locked_until, now))}, ou choisissez « Mot de passe "
            "oublié ? » pour le réinitialiser.")


def failure_warning(failures: int, max_failures: int, lock_minutes: int) -> str:
    """What to add to a "wrong password / code" answer after ``failures`` in a row: the
    last try before the lock is announced, and the lock once it is on."""
    if failures >= max_failures:
        return (f" L'accès est maintenant bloqué pendant {minutes_fr(lock_minutes)} ; vous "
                "pouvez aussi choisir « Mot de passe oublié ? ».")
    if failures == max_failures - 1:
        return (" Attention : dernier essai avant blocage de l'accès pendant "
                f"{minutes_fr(lock_minutes)}.")
    return ""


def count_failure(account: Account, now: datetime, max_failures: int,
                  lock_minutes: int) -> None:
    """One more wrong code: lock the account like wrong passwords do.

    Wrong codes have their own counter (``code_failures``), which a correct password does not
    reset: only a complete login or the lock's expiry does (issue #14, item 4) — otherwise
    password, 4 wrong codes, password, 4 wrong codes… would never lock.

    Raises:
        AccountLocked: this failure reached ``max_failures``.
    """
    account.code_failures = (account.code_failures or 0) + 1
    if account.code_failures >= max_failures:
        account.locked_until = now + timedelta(minutes=lock_minutes)
        raise AccountLocked(account.locked_until)


def check_not_locked(account: Account, now: datetime) -> None:
    """Raises AccountLocked while the account is inside its lock window."""
    if account.locked_until is not None and account.locked_until > now:
        raise AccountLocked(account.locked_until)


class PhantomLocks:
    """Failure counts for identifiers that match no account, so that they get locked exactly
    like real accounts and the answers do not tell which identifiers exist. Counted in the
    database (``core.counters``, key ``<name>:`` + a hash of the identifier), so every webmail
    process and host sees the same count (issue #19); a window runs from the last failure.

    The password reset uses two more of these as rate limits per identifier, for known and
    unknown ones alike (codes asked, wrong codes): they lock nothing, the account's one
    lock-out stays ``Account.locked_until``. Each method takes the caller's unit of work."""

    def __init__(self, name: str, max_failures: int, lock_minutes: int) -> None:
        self.name = name
        self.max_failures = max_failures
        self.window = lock_minutes * 60

    def _key(self, identifier: str) -> str:
        digest = hashlib.sha256(identifier.strip().lower().encode()).hexdigest()
        return f"{self.name}:{digest}"

    def check(self, db: Session, identifier: str) -> None:
        """Raises AccountLocked if this unknown identifier is "locked"."""
        count, expires = counters.read(db, self._key(identifier))
        if count >= self.max_failures and expires is not None:
            raise AccountLocked(datetime.fromtimestamp(expires, UTC))

    def count(self, db: Session, identifier: str) -> int:
        """Failures counted for ``identifier`` inside the window."""
        return counters.read(db, self._key(identifier))[0]

    def fail(self, db: Session, identifier: str) -> None:
        counters.add(db, self._key(identifier), self.window, extend=True)

    def forget(self, db: Session) -> int:
        """Forget every count of this kind (tests, and an operator clearing locks)."""
        return counters.clear_prefix(db, self.name + ":")
