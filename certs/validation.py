"""Certificate path validation against the trust space's CA (RFC 5280 §6), with distinct errors
for each way a certificate can fail: untrusted, expired, revoked, or wrong purpose.

How a certificate is checked, in this order (so that the error says what really went wrong):

1. a path to a trust anchor is found by issuer name and signature (``UntrustedCertificate``);
2. every certificate on it is inside its validity period at ``at`` (``CertificateExpired``);
3. cryptography's RFC 5280 verifier re-checks the path with its full policy: signatures,
   basicConstraints and pathLen, keyUsage on CAs, algorithms, critical extensions
   (``UntrustedCertificate``);
4. each certificate below the root is looked up on its issuer's CRL (``CertificateRevoked``);
5. the leaf's extendedKeyUsage fits the purpose (``WrongPurpose``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from certs._x509util import as_utc, describe, email_addresses, name_attr, serial_hex
from certs.errors import (
    CertificateExpired,
    CertificateRevoked,
    PkiNotInitialised,
    UntrustedCertificate,
    WrongPurpose,
)
from certs.pki import NATIONAL_ID, CardIdentity
from core.errors import ConfigError

Purpose = Literal["email", "client", "server"]

_PURPOSES: dict[str, tuple[x509.ObjectIdentifier, str]] = {
    "email": (ExtendedKeyUsageOID.EMAIL_PROTECTION, "la messagerie sécurisée (S/MIME)"),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH, "l'authentification d'un client TLS"),
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, "l'authentification d'un serveur TLS"),
}
MAX_DEPTH = 4
_CERT_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


@dataclass(frozen=True)
class TrustStore:
    """Trust anchors (self-signed roots), known intermediate CAs, and their CRLs."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    crls: Mapping[x509.Name, x509.CertificateRevocationList] = field(default_factory=dict)

    @classmethod
    def from_pki_dir(cls, pki_dir: Path) -> TrustStore:
        """The store of a PKI directory: ``ca.pem`` and ``crl.pem`` if present."""
        ca_path, crl_path = Path(pki_dir) / "ca.pem", Path(pki_dir) / "crl.pem"
        if not ca_path.is_file():
            raise PkiNotInitialised(f"Pas d'autorité de certification dans {pki_dir} (ca.pem).")
        crl = crl_path.read_bytes() if crl_path.is_file() else None
        return cls.from_pem(ca_path.read_bytes(), crl)

    @classmethod
    def with_peers(cls, pki_dir: Path) -> TrustStore:
        """Our CA plus the peer operators' CAs: every ``*.pem`` under ``pki_dir/peers/`` (CA
        certificates and their CRLs, as each peer publishes its ``ca.pem`` and ``crl.pem``).
        Used to authenticate peer relays and to verify signatures of peer professionals."""
        ca_path, crl_path = Path(pki_dir) / "ca.pem", Path(pki_dir) / "crl.pem"
        if not ca_path.is_file():
            raise PkiNotInitialised(f"Pas d'autorité de certification dans {pki_dir} (ca.pem).")
        bundle = [ca_path.read_bytes()]
        crls = [crl_path.read_bytes() if crl_path.is_file() else b""]
        for extra in sorted((Path(pki_dir) / "peers").glob("*.pem")):
            data = extra.read_bytes()
            if b"BEGIN CERTIFICATE" in data:
                bundle.extend(_CERT_PEM.findall(data))
            if b"BEGIN X509 CRL" in data:
                crls.append(data)
        return cls.from_pem(b"\n".join(bundle), b"\n".join(crls))

    @classmethod
    def from_pem(cls, ca_pem: bytes, crl_pem: bytes | None = None) -> TrustStore:
        """A store from a PEM bundle of CA certificates and optional PEM CRL(s).

        Raises:
            ConfigError: no self-signed root in the bundle, or a CRL no CA here has signed.
        """
        try:
            certs = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise ConfigError("Fichier d'autorités de certification illisible.") from exc
        anchors = tuple(c for c in certs if _self_signed(c))
        if not anchors:
            raise ConfigError("Aucune autorité racine (auto-signée) dans le fichier de confiance.")
        crls: dict[x509.Name, x509.CertificateRevocationList] = {}
        for block in _CRL_PEM.findall(crl_pem or b""):
            crl = x509.load_pem_x509_crl(block)
            if not any(_crl_signed_by(crl, c) for c in certs):
                raise ConfigError("Liste de révocation signée par une autorité inconnue.")
            crls[crl.issuer] = crl
        return cls(anchors, tuple(c for c in certs if c not in anchors), crls)

    @cached_property
    def _store(self) -> Store:
        return Store(list(self.anchors))


def validate(cert: x509.Certificate, store: TrustStore, *, purpose: Purpose,
             at: datetime | None = None,
             intermediates: Sequence[x509.Certificate] = ()) -> list[x509.Certificate]:
    """Check ``cert`` for ``purpose`` at time ``at`` (default now); return the chain,
    leaf first, root last.

    Raises:
        UntrustedCertificate: no valid path to a trust anchor.
        CertificateExpired: the certificate or a CA above it is outside its validity period.
        CertificateRevoked: listed on its issuer's CRL.
        WrongPurpose: its extendedKeyUsage does not allow ``purpose``.
    """
    when = as_utc(at)
    path = _build_path(cert, store, intermediates)
    for index, member in enumerate(path):
        _check_dates(member, when, is_leaf=index == 0)
    chain = _verify_policy(cert, store, [*intermediates, *store.intermediates], when)
    _check_revocation(chain, store)
    check_purpose(cert, purpose)
    return chain


class ValidationCache:
    """Recent successful ``validate`` calls, for a certificate checked again and again (the
    gateway's own signers, once per message). A success holds for ``ttl`` seconds, never past
    the certificate's notAfter, and only with the same ``TrustStore`` object: a new CRL or CA
    file gives a new store, so a revocation applies at once. Failures are never cached."""

    def __init__(self, ttl: float = 60.0, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._ok: dict[tuple[bytes, str], tuple[TrustStore, float]] = {}
        self._lock = threading.Lock()

    def validate(self, cert: x509.Certificate, store: TrustStore, *, purpose: Purpose,
                 intermediates: Sequence[x509.Certificate] = ()) -> None:
        """``validate(cert, store, purpose=…)`` now, unless it succeeded recently."""
        key, now = (cert.fingerprint(hashes.SHA256()), purpose), time.time()
        with self._lock:
            hit = self._ok.get(key)
        if hit is not None and hit[0] is store and now < hit[1]:
            return
        validate(cert, store, purpose=purpose, intermediates=intermediates)
        until = min(now + self.ttl, cert.not_valid_after_utc.timestamp())
        with self._lock:
            if len(self._ok) >= self.size:
                self._ok.clear()
            self._ok[key] = (store, until)


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return crl.issuer == ca.subject and crl.is_signature_valid(key)


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _issued_by(cert, cert)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _build_path(cert: x509.Certificate, store: TrustStore,
                extra: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf → anchor by issuer name and signature; only to tell "untrusted" from "expired"
    before the strict verifier runs (it would report both as a failure to build a chain)."""
    pool = [*extra, *store.intermediates]
    path, current = [cert], cert
    for _ in range(MAX_DEPTH):
        anchor = next((a for a in store.anchors if _issued_by(current, a)), None)
        if anchor is not None:
            return path if anchor == current else [*path, anchor]
        issuer = next((c for c in pool if c not in path and _issued_by(current, c)), None)
        if issuer is None:
            break
        path.append(issuer)
        current = issuer
    raise UntrustedCertificate(
        f"Certificat non reconnu : « {describe(cert)} » n'a pas été émis par une autorité "
        "de l'espace de confiance."
    )


def _check_dates(cert: x509.Certificate, when: datetime, *, is_leaf: bool) -> None:
    who = "Certificat" if is_leaf else f"Certificat de l'autorité « {describe(cert)} »"
    serial = serial_hex(cert.serial_number)
    if when > cert.not_valid_after_utc:
        day = cert.not_valid_after_utc.date().isoformat()
        raise CertificateExpired(f"{who} expiré le {day} (numéro de série {serial}).")
    if when < cert.not_valid_before_utc:
        day = cert.not_valid_before_utc.isoformat(timespec="minutes")
        raise CertificateExpired(f"{who} pas encore valide : valable à partir du {day} "
                                 f"(numéro de série {serial}).")


def _ee_policy() -> ExtensionPolicy:
    # The Web PKI defaults for end entities, with two relaxations: an S/MIME or card
    # certificate has no dNSName, so a SAN is optional (the client verifier otherwise wants
    # one), and the EKU is checked by check_purpose (the client verifier would insist on
    # clientAuth, which a mailbox certificate does not carry).
    return (ExtensionPolicy.webpki_defaults_ee()
            .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
            .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None))


def _verify_policy(cert: x509.Certificate, store: TrustStore,
                   intermediates: list[x509.Certificate], when: datetime
                   ) -> list[x509.Certificate]:
    verifier = (PolicyBuilder().store(store._store).time(when)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=_ee_policy())
                .build_client_verifier())
    try:
        return list(verifier.verify(cert, intermediates).chain)
    except VerificationError as exc:
        raise UntrustedCertificate(
            f"Certificat non conforme : « {describe(cert)} » ({exc})."
        ) from exc


def _check_revocation(chain: Sequence[x509.Certificate], store: TrustStore) -> None:
    # Every certificate below the root, on its issuer's CRL (RFC 5280 §6.3). A CA without a
    # CRL in the store is not checked; a CRL past its nextUpdate is still used (better a
    # stale list than none), publishing a fresh one is the operator's job.
    for cert in chain[:-1]:
        crl = store.crls.get(cert.issuer)
        if crl is None:
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            raise CertificateRevoked(
                f"Certificat révoqué (numéro de série {serial_hex(cert.serial_number)}, "
                f"le {entry.revocation_date_utc.date().isoformat()}{_reason(entry)})."
            )


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return ""
    return f", motif : {reason.value}"


def check_purpose(cert: x509.Certificate, purpose: Purpose) -> None:
    """Raise WrongPurpose unless the certificate's extendedKeyUsage allows ``purpose``.

    mss always issues an EKU, so a certificate without one is refused too (stricter than
    RFC 5280 §4.2.1.12, which reads "absent" as "any purpose").
    """
    oid, label = _PURPOSES[purpose]
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if oid not in eku:
        raise WrongPurpose(f"Ce certificat (« {describe(cert)} ») n'est pas destiné à {label}.")


def card_identity(cert: x509.Certificate) -> CardIdentity:
    """Who a CPS-style card certificate (``Pki.issue_card``) names.

    It does not validate the certificate: call ``validate(cert, store, purpose="client")``
    first.

    Raises:
        WrongPurpose: not a card certificate (no national id, no names, or no clientAuth).
    """
    subject = cert.subject
    national_id = name_attr(subject, NameOID.SERIAL_NUMBER) or ""
    first = name_attr(subject, NameOID.GIVEN_NAME)
    last = name_attr(subject, NameOID.SURNAME)
    profession = name_attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not (NATIONAL_ID.match(national_id) and first and last and profession):
        raise WrongPurpose(
            f"Ce certificat (« {describe(cert)} ») n'est pas un certificat de carte de "
            "professionnel de santé : identifiant national (RPPS/ADELI) ou nom absent."
        )
    check_purpose(cert, "client")
    addresses = email_addresses(cert)
    return CardIdentity(national_id, first, last, profession, addresses[0] if addresses else None)
