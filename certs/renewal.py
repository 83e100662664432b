"""Renewing our own TLS certificates in place: the server certificate (submission, IMAP,
webmail) and the operator (relay) certificate, ``DATA_DIR/pki/{server,operator}.{crt,key}``.

Two ways, as the current certificate's issuer dictates:

- issued by mss's own CA (the demo, a self-hosted trust space): ``Pki.reissue`` signs a new
  certificate with the same subject and names over a new key (``renew_with_ca``);
- issued by another CA (production: a public CA for the server, the IGC Santé for the
  operator): a new key waits beside the current one (``<kind>.key.new``, ``pending_key``) and a
  PKCS#10 request carries the same subject and names (``request``, RFC 2986); the certificate
  the CA returns is checked against that key, its dates, purpose and chain (``check_install``)
  before it is swapped in.

A swap (``swap``) keeps the previous pair as ``<kind>.crt.prev`` / ``<kind>.key.prev`` and
writes the new files beside the old ones before renaming them over (key first, mode 0600), so
a service never reads half a file. The running services take the new pair by themselves for
new connections (the gateway's and the webmail's TLS contexts watch the files, Dovecot's
supervisor sends it SIGHUP): README, "Renouveler les certificats".

No network here; the only database write is the ledger row ``Pki.reissue`` adds.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy.orm import Session

from certs import _x509util as xu
from certs.errors import CertError, RenewalError, WrongPurpose
from certs.models import CertKind
from certs.pki import LEAF_KEY_SIZE, Issued, Pki, Validity
from certs.validation import Purpose, TrustStore, check_purpose, validate
from core.localtime import french_datetime

KINDS = ("server", "operator")
LABELS = {"server": "certificat serveur", "operator": "certificat opérateur"}
# The operator certificate serves the relay port and authenticates us to peers (mutual TLS).
_PURPOSES: dict[str, tuple[Purpose, ...]] = {"server": ("server",),
                                             "operator": ("server", "client")}
CLOCK_SKEW = timedelta(minutes=5)
_CERT_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Slot:
    """Where one of our TLS certificates lives under ``pki_dir``."""

    pki_dir: Path
    kind: str  # "server" or "operator"

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def cert_path(self) -> Path:
        return self.pki_dir / f"{self.kind}.crt"

    @property
    def key_path(self) -> Path:
        return self.pki_dir / f"{self.kind}.key"

    @property
    def pending_key_path(self) -> Path:
        """The new key waiting for the certificate a CA will sign (``renew --csr``)."""
        return self.pki_dir / f"{self.kind}.key.new"

    @staticmethod
    def prev(path: Path) -> Path:
        return path.with_name(path.name + ".prev")


@dataclass(frozen=True)
class Current:
    """The certificate in service: the leaf and what follows it in the file."""

    slot: Slot
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    def days_left(self, now: datetime | None = None) -> float:
        return days_left(self.certificate, now)


@dataclass(frozen=True)
class Checked:
    """A certificate fit to install: leaf, chain, the authority its chain was verified up to
    (None: no known root here to verify it against) and remarks for the operator."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    anchor: str | None
    notes: tuple[str, ...]

    def pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM)
                        for c in (self.leaf, *self.chain))


def slot(pki_dir: Path, kind: str) -> Slot:
    if kind not in KINDS:
        raise RenewalError(f"type de certificat inconnu « {kind} » (server ou operator)")
    return Slot(Path(pki_dir), kind)


def load_current(where: Slot) -> Current:
    """The certificate in service.

    Raises:
        RenewalError: absent or unreadable.
    """
    if not where.cert_path.is_file():
        raise RenewalError(f"{where.cert_path} absent : lancez d'abord « mss init »")
    leaf, *rest = read_certificates(where.cert_path)
    return Current(where, leaf, tuple(rest))


def read_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM file (in file order) or the one of a DER file.

    Raises:
        RenewalError: missing, unreadable, or holding something else (key, request…).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RenewalError(f"fichier introuvable : {path}") from None
    except OSError as exc:
        raise RenewalError(f"{path} illisible ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise RenewalError(f"{path} n'est pas un certificat (PEM ou DER attendu)") from None
    blocks = _CERT_PEM.findall(data)
    if not blocks:
        raise RenewalError(f"{path} ne contient aucun certificat ({_what(data)})")
    try:
        return [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError:
        raise RenewalError(f"{path} : certificat PEM illisible") from None


def _what(data: bytes) -> str:
    if b"PRIVATE KEY-----" in data:
        return "c'est une clé privée"
    if b"CERTIFICATE REQUEST-----" in data:
        return "c'est une demande de certificat (CSR)"
    if b"X509 CRL-----" in data:
        return "c'est une liste de révocation"
    return "PEM d'un autre type"


def days_left(cert: x509.Certificate, now: datetime | None = None) -> float:
    return round((cert.not_valid_after_utc - xu.as_utc(now)).total_seconds() / 86400, 1)


def names(cert: x509.Certificate) -> list[str]:
    """The subjectAltName's host names and addresses, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def renew_with_ca(pki: Pki, session: Session, current: Current,
                  valid_days: int | None = None) -> Issued:
    """A new key and certificate from our CA, same subject and names (ledger row added).

    Raises:
        RenewalError: the current certificate is not our CA's.
    """
    if not issued_by(current.certificate, pki.issuing):
        raise RenewalError(not_ours(current))
    validity: Validity = {"valid_days": valid_days} if valid_days else {}
    return pki.reissue(session, CertKind(current.slot.kind), current.certificate, **validity)


def not_ours(current: Current) -> str:
    kind, issuer = current.slot.kind, current.certificate.issuer.rfc4514_string()
    return (f"le {current.slot.label} actuel a été émis par « {issuer} », pas par l'autorité "
            f"de mss : demandez-en un nouveau à cette autorité (« mss cert renew {kind} "
            f"--csr FICHIER »), puis installez-le (« mss cert install {kind} CERT.pem »)")


# ---------------------------------------------------------------- request to another CA
def pending_key(where: Slot) -> tuple[rsa.RSAPrivateKey, bool]:
    """The key waiting for its certificate, created (RSA 2048, mode 0600) when there is
    none; True when created. An existing one is kept: a request may already be with the CA.

    Raises:
        RenewalError: the pending key file is unreadable.
    """
    path = where.pending_key_path
    if path.exists():
        return load_pending(where), False
    key = rsa.generate_private_key(65537, LEAF_KEY_SIZE)
    xu.atomic_write(path, xu.key_pem(key, None), 0o600)
    return key, True


def load_pending(where: Slot) -> rsa.RSAPrivateKey:
    path = where.pending_key_path
    if not path.is_file():
        raise RenewalError(f"aucune clé en attente ({path}) : lancez d'abord « mss cert renew "
                           f"{where.kind} --csr FICHIER » et faites signer la demande")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        raise RenewalError(f"clé en attente illisible : {path}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RenewalError(f"clé en attente inattendue (RSA attendue) : {path}")
    return key


def request(current: Current, key: rsa.RSAPrivateKey) -> x509.CertificateSigningRequest:
    """A PKCS#10 request with the current certificate's subject, subjectAltName and
    extendedKeyUsage, signed by ``key`` (SHA-256)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(current.certificate.subject)
    for ext in current.certificate.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName | x509.ExtendedKeyUsage):
            builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(key, hashes.SHA256())


# ---------------------------------------------------------------- installing what a CA sent
def check_install(current: Current, certs: Sequence[x509.Certificate],
                  chain: Sequence[x509.Certificate], store: TrustStore,
                  now: datetime | None = None, *, new_subject: bool = False) -> Checked:
    """Check the certificate a CA returned for the pending key (``certs``: the file's
    certificates, leaf first; ``chain``: a separate chain file's).

    Raises:
        RenewalError: no pending key, not this key's certificate, a CA certificate, outside its
            dates, wrong purpose, a broken or invalid chain, or (operator, unless
            ``new_subject``) another subject than the one peers pin in their whitelist.
    """
    where, when = current.slot, xu.as_utc(now)
    key = load_pending(where)
    # The pending key's certificate wherever it is in the file (CAs send bundles in any order).
    leaf = next((c for c in certs if _spki(c.public_key()) == _spki(key.public_key())), certs[0])
    extra = _order(leaf, [c for c in [*certs, *chain] if c != leaf])
    _check_leaf(where, leaf, key, when)
    anchor = _check_chain(where, leaf, extra, store, when)
    notes = []
    if leaf.subject != current.certificate.subject:
        change = (f"sujet changé : « {current.certificate.subject.rfc4514_string()} » → "
                  f"« {leaf.subject.rfc4514_string()} »")
        if where.kind == "operator" and not new_subject:
            raise RenewalError(
                f"{change} ; les opérateurs pairs reconnaissent le relais à ce DN (liste "
                "blanche) : confirmez avec --new-subject après l'avoir fait publier")
        notes.append(change)
    lost = [n for n in names(current.certificate) if n not in names(leaf)]
    if lost:
        notes.append(f"noms absents du nouveau certificat : {', '.join(lost)}")
    if anchor is None:
        notes.append("chaîne non vérifiée : l'autorité racine n'est pas connue ici")
    # Written after the leaf: the intermediates, not a root (peers hold their own roots).
    served = tuple(c for c in extra if c.subject != c.issuer)
    return Checked(leaf, served, anchor, tuple(notes))


def _order(leaf: x509.Certificate, others: list[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """The other certificates from the leaf's issuer upwards, then any left over (which
    ``_check_chain`` then finds out of line)."""
    ordered, current, pool = [], leaf, list(dict.fromkeys(others))
    while (parent := next((c for c in pool if issued_by(current, c)), None)) is not None:
        ordered.append(parent)
        pool.remove(parent)
        current = parent
    return tuple(ordered + pool)


def _check_leaf(where: Slot, leaf: x509.Certificate, key: rsa.RSAPrivateKey,
                when: datetime) -> None:
    try:
        ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if ca:
        raise RenewalError(f"« {xu.describe(leaf)} » est un certificat d'autorité, pas le "
                           f"{where.label}")
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise RenewalError(f"ce certificat ne correspond pas à la clé en attente "
                           f"{where.pending_key_path} (il a été demandé avec une autre clé)")
    if when > leaf.not_valid_after_utc:
        raise RenewalError(f"ce certificat a expiré le {french_datetime(leaf.not_valid_after_utc)}")
    if leaf.not_valid_before_utc > when + CLOCK_SKEW:
        raise RenewalError("ce certificat n'est pas encore valable (à partir du "
                           f"{french_datetime(leaf.not_valid_before_utc)})")
    for purpose in _PURPOSES[where.kind]:
        try:
            check_purpose(leaf, purpose)
        except WrongPurpose as exc:
            raise RenewalError(f"{exc.message} Il ne peut pas servir de {where.label}.") from None


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_chain(where: Slot, leaf: x509.Certificate, chain: tuple[x509.Certificate, ...],
                 store: TrustStore, when: datetime) -> str | None:
    """The chain given is linked (each certificate signed by the next); when a known CA
    (ours, a peer's, a system root) signed one of them, the full RFC 5280 validation too.
    The anchor's name, or None when nothing here can verify it."""
    path = [leaf, *chain]
    for child, parent in zip(path, path[1:], strict=False):
        if not issued_by(child, parent):
            raise RenewalError(f"chaîne incohérente : « {xu.describe(child)} » n'a pas été "
                               f"émis par « {xu.describe(parent)} »")
    known = [*store.anchors, *store.intermediates]
    if not any(c in store.anchors or any(issued_by(c, ca) for ca in known) for c in path):
        return None
    try:
        verified = validate(leaf, store, purpose=_PURPOSES[where.kind][0], at=when,
                            intermediates=chain)
    except CertError as exc:
        raise RenewalError(f"chaîne refusée : {exc.message}") from None
    return xu.describe(verified[-1])


def install_store(pki_dir: Path) -> TrustStore:
    """What an installed certificate is verified against: our CA, the peers' CAs
    (``pki/peers/``, where an IGC Santé root goes) and the system's roots (public CAs)."""
    base = TrustStore.with_peers(pki_dir)
    return TrustStore(base.anchors + _system_roots(), base.intermediates, base.crls)


def _system_roots() -> tuple[x509.Certificate, ...]:
    cafile = ssl.get_default_verify_paths().cafile
    path = Path(cafile) if cafile else _SYSTEM_ROOTS
    try:
        data = path.read_bytes()
    except OSError:
        return ()
    roots = []
    for block in _CERT_PEM.findall(data):
        try:
            roots.append(x509.load_pem_x509_certificate(block))
        except ValueError:  # one odd root must not stop the others
            continue
    return tuple(roots)


# ---------------------------------------------------------------- swapping files
def swap(where: Slot, cert_pem: bytes, key_pem: bytes) -> None:
    """Keep the current pair as ``*.prev`` and put the new one in place: both new files are
    written and synced beside the old ones, then renamed over them, key first."""
    for path, mode in ((where.cert_path, 0o644), (where.key_path, 0o600)):
        if path.is_file():
            xu.atomic_write(Slot.prev(path), path.read_bytes(), _mode(path, mode))
    staged = [(_stage(where.key_path, key_pem, 0o600), where.key_path),
              (_stage(where.cert_path, cert_pem, _mode(where.cert_path, 0o644)), where.cert_path)]
    for tmp, final in staged:
        os.replace(tmp, final)


def install(checked: Checked, where: Slot) -> None:
    """Swap in a checked certificate with the pending key, which then stops being pending."""
    swap(where, checked.pem(), where.pending_key_path.read_bytes())
    where.pending_key_path.unlink()


def _mode(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def _stage(final: Path, data: bytes, mode: int) -> str:
    """A synced temporary file beside ``final`` with ``mode`` (and, as root, ``final``'s
    owner: a service running as another user keeps reading it)."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0 and final.exists():
            st = final.stat()
            os.fchown(fd, st.st_uid, st.st_gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp
