"""CPS smart cards through PKCS#11; SoftHSM2 simulates the cards in tests and in the demo.

A card is a token labelled ``CPS-<national id>`` holding an RSA 2048 key pair generated on the
token (private key sensitive, never extractable) and the certificate the CA issued for it.
The certificate is public; signing needs the holder's PIN.

Library life cycle. SoftHSM2 reads ``SOFTHSM2_CONF`` (its token directory) only in
``C_Initialize``, and python-pkcs11 0.10 keeps one ``pkcs11.lib`` per module path per process
(``pkcs11._loaded``: one dlopen, one PKCS#11 state). A process may serve several cards_dir
(tests do), so every token operation runs under ``_LOCK``, and when the wanted configuration
differs from the one the library was initialised with, ``SOFTHSM2_CONF`` is set to ours just
for ``lib.reinitialize()`` (C_Finalize + C_Initialize), then the caller's value is restored (an
unrelated ``SOFTHSM2_CONF`` is harmless). Sessions never outlive an operation, so re-initialising
never pulls one from under another thread. Tokens written by another process (``mss`` CLI) only
appear after ``C_Initialize``: an unknown label triggers one re-initialisation before
``CardNotFound``. This module must be the only user of the PKCS#11 module in the process.

Two calls go through ``ctypes`` on the same, already initialised, library since python-pkcs11
0.10 lacks them: ``C_InitToken``, so that PINs never appear on a command line (``softhsm2-util
--pin`` shows them in ``ps``), and ``C_CloseAllSessions``, because ``Token.open`` leaks its
session when ``C_Login`` fails (that read-only session would then block SO logins).

SoftHSM2 never locks a user PIN (CKR_PIN_INCORRECT forever); real CPS cards lock after three
wrong PINs, so callers that accept PINs must rate-limit themselves.
"""

from __future__ import annotations

import ctypes
import functools
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import pkcs11
from asn1crypto.core import Integer
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11

from certs.errors import CardError, CardNotFound, PinLocked, WrongPin
from certs.validation import card_identity

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Lib
    from pkcs11.types import Session, SignMixin, Token
    from sqlalchemy.orm import Session as DbSession

    from certs.pki import CardIdentity

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN_LENGTHS = range(4, 256)  # SoftHSM2's bounds; a CPS PIN has 4 digits
KEY_BITS = 2048
_LOCK = threading.RLock()
_active_conf: dict[str, Path] = {}  # PKCS#11 module path -> conf it was initialised with


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.RLock()  # another thread may have held it at fork time
    _active_conf.clear()  # PKCS#11 v2.40 §5.4: a child process calls C_Initialize again


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class CardInfo:
    """What a card says about its holder, once read."""

    label: str
    serial: str
    certificate: x509.Certificate
    identity: CardIdentity


class CardReader(Protocol):
    """Access to the CPS cards (a PC/SC reader in production, SoftHSM2 in tests and demo)."""

    def list_cards(self) -> list[str]:
        """Labels of the cards present (initialised tokens)."""

    def certificate(self, label: str) -> x509.Certificate:
        """The card certificate (a public object: no PIN needed).

        Raises:
            CardNotFound: no card with this label.
            CardError: the card holds no certificate, or the token failed.
        """

    def read_identity(self, label: str, pin: str) -> CardInfo:
        """Log in with the PIN and read the holder's certificate and identity.

        Raises:
            CardNotFound: no card with this label.
            WrongPin: the PIN is wrong (or of an impossible length).
            PinLocked: the card refuses any PIN until unblocked.
            CardError: the card is incomplete, or the token failed.
            WrongPurpose: the certificate on the card is not a card certificate.
        """

    def sign_challenge(self, label: str, pin: str, challenge: bytes) -> bytes:
        """Sign ``challenge`` on the card (RSA PKCS#1 v1.5 with SHA-256).

        Raises:
            CardNotFound, WrongPin, PinLocked, CardError: as for ``read_identity``.
        """


class CardIssuer(Protocol):
    """The part of the CA that provisioning needs (``certs.pki.Pki``)."""

    def issue_card(
        self, session: DbSession, identity: CardIdentity, public_key: rsa.RSAPublicKey
    ) -> x509.Certificate: ...


def verify_challenge(cert: x509.Certificate, challenge: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the card's RSA PKCS#1 v1.5 / SHA-256 signature of
    ``challenge`` under the key of ``cert`` (chain and validity are checked elsewhere)."""
    key = cert.public_key()
    try:
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        key.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


class SoftHsmCards:
    """Cards simulated by SoftHSM2, tokens stored under ``<cards_dir>/tokens``."""

    def __init__(self, cards_dir: Path, module: str = DEFAULT_MODULE) -> None:
        self.cards_dir = Path(cards_dir).resolve()
        self.module = module
        self.conf_path = self.cards_dir / "softhsm2.conf"

    def list_cards(self) -> list[str]:
        """Labels of the initialised tokens, sorted."""
        with self._library() as lib:
            return sorted(t.label for t in _tokens(lib))

    def certificate(self, label: str) -> x509.Certificate:
        """See ``CardReader.certificate``."""
        with self._session(label) as session:
            return _read_certificate(session, label)[0]

    def read_identity(self, label: str, pin: str) -> CardInfo:
        """See ``CardReader.read_identity``."""
        with self._session(label, pin) as session:
            cert, key_id = _read_certificate(session, label)
            _private_key(session, key_id, label)  # the PIN opens a complete card
            serial = session.token.serial.decode("ascii")
        return CardInfo(label, serial, cert, card_identity(cert))

    def sign_challenge(self, label: str, pin: str, challenge: bytes) -> bytes:
        """See ``CardReader.sign_challenge``."""
        with self._session(label, pin) as session:
            key_id = _read_certificate(session, label)[1]
            key = _private_key(session, key_id, label)
            return bytes(key.sign(challenge, mechanism=Mechanism.SHA256_RSA_PKCS))

    def provision(
        self,
        pki: CardIssuer,
        session: DbSession,
        identity: CardIdentity,
        *,
        pin: str,
        so_pin: str | None = None,
        label: str | None = None,
    ) -> CardInfo:
        """Initialise a new card: token, key pair on the token, certificate from the CA.

        The SO PIN defaults to a random one nobody needs afterwards. An existing label is
        refused, never overwritten (a card is revoked and re-issued under a new label).
        The CA call runs inside the caller's ``session`` (and under the module lock).

        Raises:
            CardError: label taken or too long, PIN of an impossible length, token failure.
            Whatever ``issue_card`` raises (ValueError: bad identity), the new token deleted.
        """
        label = label or f"CPS-{identity.national_id}"
        so_pin = so_pin or secrets.token_hex(16)
        _check_new_card(label, pin, so_pin)
        with self._library() as lib:
            if _find_token(lib, label) is not None:
                raise CardError(f"Une carte porte déjà le libellé {label}")
            token = self._init_token(lib, label, so_pin)
            serial = token.serial.decode("ascii")
            issue = functools.partial(pki.issue_card, session, identity)
            try:
                with token.open(rw=True, so_pin=so_pin) as so_session:
                    so_session.init_pin(pin)
                cert = _generate_and_certify(token, pin, label, issue)
            except BaseException as exc:
                self._delete_token(lib, serial)  # no half-provisioned card left behind
                if isinstance(exc, p11.PKCS11Error):
                    raise _card_error(exc, label) from exc
                raise
        return CardInfo(label, serial, cert, card_identity(cert))

    def _init_token(self, lib: Pkcs11Lib, label: str, so_pin: str) -> Token:
        """C_InitToken in SoftHSM2's free slot (the SO PIN stays in this process)."""
        free = _tokens(lib, initialised=False)
        if not free:
            raise CardError("Aucun emplacement libre pour une nouvelle carte")
        rv = _c_call(self.module, "C_InitToken", free[0].slot.slot_id, so_pin.encode(),
                     len(so_pin.encode()), label.encode().ljust(32, b" "))
        if rv != 0:
            raise CardError(f"Initialisation de la carte {label} impossible (CKR 0x{rv:x})")
        return lib.get_token(token_label=label)

    def _delete_token(self, lib: Pkcs11Lib, serial: str) -> None:
        """Remove a half-provisioned token (no secret needed), then let SoftHSM2 forget it."""
        env = {**os.environ, "SOFTHSM2_CONF": str(self.conf_path)}
        subprocess.run(["softhsm2-util", "--delete-token", "--serial", serial],
                       env=env, capture_output=True, check=False, timeout=30)
        _reinitialize(lib, self.conf_path)

    @contextmanager
    def _library(self) -> Iterator[Pkcs11Lib]:
        """The PKCS#11 library initialised on this cards_dir, held under the module lock."""
        with _LOCK:
            self._write_config()
            yield _activate(self.module, self.conf_path)

    @contextmanager
    def _session(self, label: str, pin: str | None = None) -> Iterator[Session]:
        """A session on the card, logged in when ``pin`` is given; PKCS#11 errors -> CardError."""
        with self._library() as lib:
            token = _find_token(lib, label)
            if token is None:
                _reinitialize(lib, self.conf_path)  # maybe provisioned by another process since
                token = _find_token(lib, label)
            if token is None:
                raise CardNotFound(f"Carte introuvable : {label}")
            try:
                session = token.open(user_pin=pin)
            except p11.PKCS11Error as exc:
                _c_call(self.module, "C_CloseAllSessions", token.slot.slot_id)  # see docstring
                raise _card_error(exc, label) from exc
            try:
                with session:
                    yield session
            except p11.PKCS11Error as exc:
                raise _card_error(exc, label) from exc

    def _write_config(self) -> None:
        tokens = self.cards_dir / "tokens"
        tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = (f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                "log.level = ERROR\nslots.removable = false\n")
        if not self.conf_path.exists() or self.conf_path.read_text() != text:
            tmp = self.conf_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.conf_path)  # other processes never read a half-written file


def _activate(module: str, conf: Path) -> Pkcs11Lib:
    """Return the library initialised with ``conf``, re-initialising it if needed (lock held)."""
    try:
        with _softhsm2_conf(conf):
            lib = pkcs11.lib(module)  # first use: dlopen + C_Initialize with our conf
        if _active_conf.get(module) != conf:
            _reinitialize(lib, conf)
    except p11.PKCS11Error as exc:
        raise CardError(f"Module PKCS#11 inutilisable : {module} ({exc})") from exc
    return lib


def _reinitialize(lib: Pkcs11Lib, conf: Path) -> None:
    """C_Finalize + C_Initialize with ``conf``: closes every session, rescans the tokens."""
    _active_conf.pop(lib.so, None)  # unknown state if C_Initialize fails below
    with _softhsm2_conf(conf):
        lib.reinitialize()
    _active_conf[lib.so] = conf


@contextmanager
def _softhsm2_conf(conf: Path) -> Iterator[None]:
    """Point SoftHSM2 at ``conf`` for the block, then restore the caller's environment."""
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@functools.cache
def _c_library(module: str) -> ctypes.CDLL:
    return ctypes.CDLL(module)  # same dlopen handle as python-pkcs11's: same PKCS#11 state


def _c_call(module: str, name: str, *args: Any) -> int:
    """Call a PKCS#11 function python-pkcs11 does not expose; returns the CK_RV."""
    func = getattr(_c_library(module), name)
    func.restype = ctypes.c_ulong
    func.argtypes = [ctypes.c_ulong if isinstance(a, int) else ctypes.c_char_p for a in args]
    return int(func(*args))


def _tokens(lib: Pkcs11Lib, initialised: bool = True) -> list[Token]:
    tokens = [slot.get_token() for slot in lib.get_slots(token_present=True)]
    return [t for t in tokens if bool(t.flags & TokenFlag.TOKEN_INITIALIZED) == initialised]


def _find_token(lib: Pkcs11Lib, label: str) -> Token | None:
    return next((t for t in _tokens(lib) if t.label == label), None)


def _check_new_card(label: str, pin: str, so_pin: str) -> None:
    if not label or len(label.encode()) > 32:  # CK_TOKEN_INFO.label is 32 bytes
        raise CardError("Le libellé d'une carte doit faire de 1 à 32 octets")
    if len(pin) not in PIN_LENGTHS or len(so_pin) not in PIN_LENGTHS:
        raise CardError("Un code PIN doit comporter de 4 à 255 caractères")


def _generate_and_certify(
    token: Token, pin: str, label: str, issue: Callable[[rsa.RSAPublicKey], x509.Certificate]
) -> x509.Certificate:
    """Generate the key pair on the token, have it certified, store the certificate."""
    with token.open(rw=True, user_pin=pin) as session:
        public, private = session.generate_keypair(
            KeyType.RSA, KEY_BITS, label=label, store=True,
            public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: True,
                             Attribute.PRIVATE: False},
            private_template={Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                              Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                              Attribute.DECRYPT: True},
        )
        public_key = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        ).public_key()
        # One CKA_ID (the subject key identifier) on the key pair and the certificate, so that
        # PKCS#11 consumers pair them (PKCS#11 v2.40, X.509 certificate objects).
        key_id = x509.SubjectKeyIdentifier.from_public_key(public_key).digest
        for obj in (public, private):
            obj[Attribute.ID] = key_id
        cert: x509.Certificate = issue(public_key)
        session.create_object(_certificate_template(cert, key_id, label))
    return cert


def _certificate_template(cert: x509.Certificate, key_id: bytes, label: str) -> dict[Any, Any]:
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.ID: key_id,
        Attribute.LABEL: label,
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.ISSUER: cert.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: Integer(cert.serial_number).dump(),
        Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
    }


def _read_certificate(session: Session, label: str) -> tuple[x509.Certificate, bytes]:
    """The card certificate and its CKA_ID."""
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}))
    if len(found) != 1:
        raise CardError(f"La carte {label} ne porte pas de certificat")
    (obj,) = found
    return x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE])), bytes(obj[Attribute.ID])


def _private_key(session: Session, key_id: bytes, label: str) -> SignMixin:
    try:  # an RSA private key object implements sign()
        return cast("SignMixin", session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA, id=key_id))
    except (p11.NoSuchKey, p11.MultipleObjectsReturned) as exc:
        raise CardError(f"La carte {label} n'a pas de clé privée utilisable") from exc


def _card_error(exc: p11.PKCS11Error, label: str) -> CardError:
    """Translate a PKCS#11 error; the PIN is never part of the message."""
    if isinstance(exc, p11.PinLocked):
        return PinLocked("Carte bloquée : trop de codes PIN erronés")
    if isinstance(exc, p11.PinIncorrect | p11.PinLenRange | p11.PinInvalid):
        return WrongPin("Code PIN incorrect")
    if isinstance(exc, p11.TokenNotPresent | p11.DeviceRemoved | p11.TokenNotRecognised):
        return CardNotFound(f"Carte introuvable : {label}")
    return CardError(f"Erreur de la carte {label} ({type(exc).__name__})")
