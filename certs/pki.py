"""The trust space's certificate authority (IGC): a root CA and an issuing CA kept under
``pki_dir``, the leaf certificates mss hands out, their ledger, and the CRL.

Layout of ``pki_dir``::

    root.pem  root.key       self-signed root, pathLenConstraint 1 (keys mode 0600)
    issuing.pem  issuing.key issuing CA, pathLenConstraint 0: signs every leaf and the CRL
    ca.pem                   issuing + root, the bundle TLS peers and ``openssl -CAfile`` use
    crl.pem                  the issuing CA's CRL (RFC 5280 §5), rewritten by ``make_crl``
    pki.json                 organisation and domain

Every certificate issued is recorded in ``IssuedCertificate`` through the caller's session;
nothing here commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypedDict, Unpack

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from certs import _x509util as xu
from certs._x509util import Extensions, as_utc, atomic_write, serial_hex
from certs.errors import PkiNotInitialised
from certs.models import CertKind, IssuedCertificate
from core.errors import NotFound

CA_KEY_SIZE = 3072
LEAF_KEY_SIZE = 2048
ROOT_DAYS = 20 * 365
ISSUING_DAYS = 10 * 365
LEAF_DAYS = 3 * 365  # like a CPS (about three years)
CRL_DAYS = 7
BACKDATE = timedelta(minutes=5)  # tolerate peers whose clock is a little behind

# "8" + RPPS (11 digits) or "0" + ADELI (9 digits): the national id of a health professional.
NATIONAL_ID = re.compile(r"^(?:8\d{11}|0\d{9})$")

EKU = ExtendedKeyUsageOID


class Validity(TypedDict, total=False):
    """Optional validity override of the issuing methods (tests make expired certificates)."""

    not_before: datetime
    not_after: datetime
    valid_days: int


@dataclass(frozen=True)
class CardIdentity:
    """Who a CPS-style card certificate names."""

    national_id: str  # "8"+RPPS (11 digits) or "0"+ADELI (9 digits)
    first_name: str
    last_name: str
    profession: str  # e.g. "Médecin", "Pharmacien", "Infirmier"
    email: str | None = None  # secure mailbox address, put in SAN rfc822Name when given


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate and, unless it lives on a card, its private key."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | None

    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a password is given."""
        if self.private_key is None:
            raise ValueError("pas de clé privée : elle est sur la carte")
        return xu.key_pem(self.private_key, password)


class Pki:
    """The CA on disk. Build it with ``create`` (idempotent) or ``load``."""

    def __init__(self, pki_dir: Path, root: x509.Certificate, root_key: rsa.RSAPrivateKey,
                 issuing: x509.Certificate, issuing_key: rsa.RSAPrivateKey, domain: str) -> None:
        self.pki_dir = pki_dir
        self.root = root
        self.issuing = issuing
        self.domain = domain
        self._root_key = root_key
        self._issuing_key = issuing_key
        self.ca_pem_path = pki_dir / "ca.pem"
        self.crl_path = pki_dir / "crl.pem"
        o = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        self.organisation = str(o[0].value) if o else domain

    def __repr__(self) -> str:  # never show keys
        return f"Pki({str(self.pki_dir)!r})"

    # ------------------------------------------------------------------ creation / loading
    @classmethod
    def create(cls, pki_dir: Path, organisation: str, domain: str, *,
               password: bytes | None = None) -> Pki:
        """Create the root and issuing CAs under ``pki_dir``, or load them if already there.

        ``password`` (optional) encrypts the CA private keys at rest.
        """
        pki_dir = Path(pki_dir)
        if (pki_dir / "ca.pem").exists():
            return cls.load(pki_dir, password=password)
        pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = as_utc(None) - BACKDATE
        root_key = rsa.generate_private_key(65537, CA_KEY_SIZE)
        root_name = xu.make_name((NameOID.COUNTRY_NAME, "FR"),
                                 (NameOID.ORGANIZATION_NAME, organisation),
                                 (NameOID.COMMON_NAME, f"AC racine {organisation}"))
        root = xu.ca_certificate(root_name, root_key, root_name, root_key, now, ROOT_DAYS, 1)
        issuing_key = rsa.generate_private_key(65537, CA_KEY_SIZE)
        issuing_name = xu.make_name((NameOID.COUNTRY_NAME, "FR"),
                                    (NameOID.ORGANIZATION_NAME, organisation),
                                    (NameOID.COMMON_NAME, f"AC {organisation}"))
        issuing = xu.ca_certificate(issuing_name, issuing_key, root_name, root_key, now,
                                    ISSUING_DAYS, 0, issuer_cert=root)
        pki = cls(pki_dir, root, root_key, issuing, issuing_key, domain)
        pki._write(password, {"organisation": organisation, "domain": domain})
        return pki

    def _write(self, password: bytes | None, meta: dict[str, str]) -> None:
        pem = serialization.Encoding.PEM
        atomic_write(self.pki_dir / "root.key", xu.key_pem(self._root_key, password), 0o600)
        atomic_write(self.pki_dir / "issuing.key", xu.key_pem(self._issuing_key, password), 0o600)
        atomic_write(self.pki_dir / "root.pem", self.root.public_bytes(pem))
        atomic_write(self.pki_dir / "issuing.pem", self.issuing.public_bytes(pem))
        atomic_write(self.pki_dir / "pki.json", json.dumps(meta, ensure_ascii=False).encode())
        self._write_crl([])
        # ca.pem last: its presence is what marks the PKI as complete.
        atomic_write(self.ca_pem_path, self.issuing.public_bytes(pem) + self.root.public_bytes(pem))

    @classmethod
    def load(cls, pki_dir: Path, *, password: bytes | None = None) -> Pki:
        """Load an existing PKI.

        Raises:
            PkiNotInitialised: a file is missing or a key cannot be read.
        """
        pki_dir = Path(pki_dir)
        names = ("ca.pem", "root.pem", "root.key", "issuing.pem", "issuing.key")
        missing = [n for n in names if not (pki_dir / n).is_file()]
        if missing:
            raise PkiNotInitialised(
                f"L'autorité de certification n'est pas initialisée dans {pki_dir} "
                f"(fichier(s) manquant(s) : {', '.join(missing)}). Créez-la d'abord."
            )
        meta_path = pki_dir / "pki.json"
        meta = json.loads(meta_path.read_text("utf-8")) if meta_path.exists() else {}
        return cls(
            pki_dir,
            x509.load_pem_x509_certificate((pki_dir / "root.pem").read_bytes()),
            xu.load_key(pki_dir / "root.key", password),
            x509.load_pem_x509_certificate((pki_dir / "issuing.pem").read_bytes()),
            xu.load_key(pki_dir / "issuing.key", password),
            str(meta.get("domain", "")),
        )

    # ------------------------------------------------------------------ issuing
    def issue_server(self, session: Session, hostnames: Sequence[str],
                     ip_addresses: Sequence[str] = (), **validity: Unpack[Validity]) -> Issued:
        """A TLS server certificate: SAN dNSName (+ iPAddress), EKU serverAuth."""
        if not hostnames:
            raise ValueError("au moins un nom d'hôte est nécessaire")
        subject = xu.make_name((NameOID.ORGANIZATION_NAME, self.organisation),
                           (NameOID.COMMON_NAME, hostnames[0]))
        return self._issue_with_key(session, CertKind.SERVER, subject, hostnames[0], [
            (xu.key_usage(sign=True, encipher=True), True),
            (x509.ExtendedKeyUsage([EKU.SERVER_AUTH]), False),
            (xu.host_san(hostnames, ip_addresses), False),
        ], validity)

    def issue_operator(self, session: Session, hostnames: Sequence[str], organisation: str,
                       **validity: Unpack[Validity]) -> Issued:
        """An operator's relay certificate for mutual TLS between operators
        (serverAuth + clientAuth; subject O=organisation, CN=first host name)."""
        if not hostnames:
            raise ValueError("au moins un nom d'hôte est nécessaire")
        subject = xu.make_name((NameOID.ORGANIZATION_NAME, organisation),
                           (NameOID.COMMON_NAME, hostnames[0]))
        return self._issue_with_key(session, CertKind.OPERATOR, subject, hostnames[0], [
            (xu.key_usage(sign=True, encipher=True), True),
            (x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH]), False),
            (xu.host_san(hostnames, ()), False),
        ], validity)

    def issue_mailbox(self, session: Session, address: str, display_name: str,
                      **validity: Unpack[Validity]) -> Issued:
        """A mailbox's S/MIME certificate (RFC 8550 §4.4): SAN rfc822Name, EKU
        emailProtection, KU digitalSignature + keyEncipherment (sign and receive)."""
        _check_address(address)
        subject = xu.make_name((NameOID.COUNTRY_NAME, "FR"),
                           (NameOID.ORGANIZATION_NAME, self.organisation),
                           (NameOID.COMMON_NAME, display_name or address))
        return self._issue_with_key(session, CertKind.MAILBOX, subject, address, [
            (xu.key_usage(sign=True, encipher=True), True),
            (x509.ExtendedKeyUsage([EKU.EMAIL_PROTECTION]), False),
            (x509.SubjectAlternativeName([x509.RFC822Name(address)]), False),
        ], validity)

    def issue_client(self, session: Session, name: str, address: str | None = None,
                     **validity: Unpack[Validity]) -> Issued:
        """A TLS client certificate for an application (LPS, applicative mailbox, service);
        with an address it also carries SAN rfc822Name and emailProtection."""
        ekus = [EKU.CLIENT_AUTH]
        extensions: Extensions = []
        if address:
            _check_address(address)
            ekus.append(EKU.EMAIL_PROTECTION)
            extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(address)]), False))
        subject = xu.make_name((NameOID.ORGANIZATION_NAME, self.organisation),
                           (NameOID.COMMON_NAME, name))
        if address:
            # serialNumber carries the mailbox address: the mail store maps a client
            # certificate to its account by this field, never by the CN. UTF8String because
            # PrintableString (the default for serialNumber) cannot hold "@".
            subject = x509.Name([*subject, x509.NameAttribute(
                NameOID.SERIAL_NUMBER, address, _type=x509.name._ASN1Type.UTF8String)])
        extensions += [(xu.key_usage(sign=True, encipher=True), True),
                       (x509.ExtendedKeyUsage(ekus), False)]
        return self._issue_with_key(session, CertKind.CLIENT, subject, address or name,
                                    extensions, validity)

    def issue_card(self, session: Session, identity: CardIdentity,
                   public_key: CertificatePublicKeyTypes,
                   **validity: Unpack[Validity]) -> x509.Certificate:
        """A certificate in the style of a CPS authentication certificate, for a key that lives
        on a token. Subject: ``C=FR, O=<organisation>, OU=<profession>,
        serialNumber=<national id>, GN=<first name>, SN=<last name>,
        CN=<national id>/<first name> <last name>``; ``serialNumber`` is authoritative
        (``certs.validation.card_identity`` reads it back)."""
        if not NATIONAL_ID.match(identity.national_id):
            raise ValueError(
                f"identifiant national invalide « {identity.national_id} » "
                "(attendu : 8 + RPPS sur 11 chiffres, ou 0 + ADELI sur 9 chiffres)"
            )
        full = f"{identity.first_name} {identity.last_name}"
        subject = xu.make_name(
            (NameOID.COUNTRY_NAME, "FR"), (NameOID.ORGANIZATION_NAME, self.organisation),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, identity.profession),
            (NameOID.SERIAL_NUMBER, identity.national_id),
            (NameOID.GIVEN_NAME, identity.first_name), (NameOID.SURNAME, identity.last_name),
            (NameOID.COMMON_NAME, f"{identity.national_id}/{full}"),
        )
        extensions: Extensions = [
            (xu.key_usage(sign=True, encipher=True, non_repudiation=True), True),
            (x509.ExtendedKeyUsage([EKU.CLIENT_AUTH, EKU.EMAIL_PROTECTION]), False),
        ]
        if identity.email:
            _check_address(identity.email)
            san = x509.SubjectAlternativeName([x509.RFC822Name(identity.email)])
            extensions.append((san, False))
        return self._issue(session, CertKind.CARD, subject, identity.national_id, public_key,
                           extensions, validity)

    def issue_card_soft(self, session: Session, identity: CardIdentity,
                        **validity: Unpack[Validity]) -> Issued:
        """``issue_card`` with a software key (demo certificates for browsers)."""
        key = rsa.generate_private_key(65537, LEAF_KEY_SIZE)
        return Issued(self.issue_card(session, identity, key.public_key(), **validity), key)

    def reissue(self, session: Session, kind: CertKind, previous: x509.Certificate,
                **validity: Unpack[Validity]) -> Issued:
        """Renewal of a leaf this CA issued (``mss cert renew``): a new key and certificate
        with ``previous``'s subject, subjectAltName, keyUsage and extendedKeyUsage; a new
        serial and validity (``LEAF_DAYS`` unless ``valid_days`` says otherwise).

        Raises:
            ValueError: ``previous`` was not issued by this CA.
        """
        try:
            previous.verify_directly_issued_by(self.issuing)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("ce certificat n'a pas été émis par cette autorité") from None
        kept = (x509.KeyUsage, x509.ExtendedKeyUsage, x509.SubjectAlternativeName)
        extensions: Extensions = [(ext.value, ext.critical) for ext in previous.extensions
                                  if isinstance(ext.value, kept)]
        cn = previous.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject_key = str(cn[0].value) if cn else previous.subject.rfc4514_string()
        return self._issue_with_key(session, kind, previous.subject, subject_key, extensions,
                                    validity)

    def _issue_with_key(self, session: Session, kind: CertKind, subject: x509.Name,
                        subject_key: str, extensions: Extensions,
                        validity: Validity) -> Issued:
        key = rsa.generate_private_key(65537, LEAF_KEY_SIZE)
        cert = self._issue(session, kind, subject, subject_key, key.public_key(),
                           extensions, validity)
        return Issued(cert, key)

    def _issue(self, session: Session, kind: CertKind, subject: x509.Name, subject_key: str,
               public_key: CertificatePublicKeyTypes, extensions: Extensions,
               validity: Validity) -> x509.Certificate:
        not_before, not_after = self._validity(validity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.issuing.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
        )
        for extension, critical in _leaf_extensions(public_key, self.issuing, extensions):
            builder = builder.add_extension(extension, critical)
        cert = builder.sign(self._issuing_key, hashes.SHA256())
        session.add(IssuedCertificate(
            serial=serial_hex(cert.serial_number), kind=kind,
            subject=cert.subject.rfc4514_string(), subject_key=subject_key,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ))
        session.flush()
        return cert

    def _validity(self, validity: Validity) -> tuple[datetime, datetime]:
        not_before = as_utc(validity.get("not_before") or as_utc(None) - BACKDATE)
        days = validity.get("valid_days", LEAF_DAYS)
        not_after = as_utc(validity.get("not_after") or not_before + timedelta(days=days))
        if "not_after" not in validity:  # a leaf never outlives its CA (RFC 5280 §6.1.3)
            not_after = min(not_after, self.issuing.not_valid_after_utc)
        if not_after <= not_before:
            raise ValueError("période de validité vide")
        return not_before, not_after

    # ------------------------------------------------------------------ ledger, revocation
    def find(self, session: Session, serial: int | str) -> IssuedCertificate | None:
        """The ledger row of a certificate this CA issued, by serial (int or hex text)."""
        stmt = select(IssuedCertificate).where(IssuedCertificate.serial == serial_hex(serial))
        return session.scalars(stmt).one_or_none()

    def revoke(self, session: Session, serial: int | str, reason: str = "unspecified") -> None:
        """Mark a certificate revoked in the ledger; ``make_crl`` publishes it.

        ``reason`` is a ``x509.ReasonFlags`` value such as ``"keyCompromise"``.
        Raises:
            NotFound: this CA never issued that serial.
            ValueError: unknown reason.
        """
        try:
            flag = x509.ReasonFlags(reason)
        except ValueError:
            valid = ", ".join(f.value for f in x509.ReasonFlags)
            raise ValueError(f"motif de révocation inconnu « {reason} » ({valid})") from None
        row = self.find(session, serial)
        if row is None:
            raise NotFound(f"Certificat inconnu (numéro de série {serial_hex(serial)})")
        if row.revoked_at is None:  # revoking twice keeps the first date
            row.revoked_at = as_utc(None)
            row.revocation_reason = flag.value
            session.flush()

    def make_crl(self, session: Session) -> x509.CertificateRevocationList:
        """Sign a fresh CRL with every revoked certificate and write it to ``crl_path``."""
        stmt = select(IssuedCertificate).where(IssuedCertificate.revoked_at.is_not(None))
        return self._write_crl(session.scalars(stmt).all())

    def _write_crl(self, rows: Iterable[IssuedCertificate]) -> x509.CertificateRevocationList:
        # crl.pem holds the issuing CA's CRL and an (always empty) CRL of the root: OpenSSL's
        # CRL_CHECK_ALL (Dovecot ssl_require_crl, `openssl verify -crl_check_all`) wants a
        # CRL for every CA of the chain.
        entries = [_revoked_entry(row) for row in rows]
        crl = _sign_crl(self.issuing, self._issuing_key, entries)
        root_crl = _sign_crl(self.root, self._root_key, [])
        pem = serialization.Encoding.PEM
        atomic_write(self.crl_path, crl.public_bytes(pem) + root_crl.public_bytes(pem))
        return crl


def _sign_crl(ca: x509.Certificate, key: rsa.RSAPrivateKey,
              entries: list[x509.RevokedCertificate]) -> x509.CertificateRevocationList:
    now = as_utc(None)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now).next_update(now + timedelta(days=CRL_DAYS))
        # RFC 5280 §5.2.3: a monotonically increasing number; milliseconds do.
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA256())


def _revoked_entry(row: IssuedCertificate) -> x509.RevokedCertificate:
    assert row.revoked_at is not None
    entry = (x509.RevokedCertificateBuilder()
             .serial_number(int(row.serial, 16)).revocation_date(row.revoked_at))
    reason = x509.ReasonFlags(row.revocation_reason or "unspecified")
    if reason is not x509.ReasonFlags.unspecified:  # RFC 5280 §5.3.1: omit "unspecified"
        entry = entry.add_extension(x509.CRLReason(reason), False)
    return entry.build()


def _leaf_extensions(public_key: CertificatePublicKeyTypes, issuer: x509.Certificate,
                     extensions: Extensions) -> Extensions:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        *extensions,
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        (xu.aki(issuer), False),
    ]


def _check_address(address: str) -> None:
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain:
        raise ValueError(f"adresse de messagerie invalide « {address} »")
