"""Low-level helpers shared by the PKI, validation and S/MIME modules (no policy here):
serials, times, atomic files, names, and CMS SignedData signature checking."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from certs.errors import CertError, MalformedSmime, PkiNotInitialised, SignatureInvalid


def serial_hex(serial: int | str) -> str:
    """A serial number as the ledger stores it: lower-case hex, no colons, no leading zeros.

    Accepts an int, or hex text as printed by mss or by ``openssl`` (``0A:1B…``, ``0x…``).
    """
    if isinstance(serial, int):
        return format(serial, "x")
    text = serial.strip().lower().replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    return format(int(text, 16), "x")


def as_utc(when: datetime | None) -> datetime:
    """``when`` as an aware UTC datetime (naive values are taken as UTC); None means now."""
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so that a reader
    (another process loading the CRL, say) never sees a half-written file. The file is
    created with ``mode`` from the start: a private key is never readable by others."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def name_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    """The first value of an attribute of a distinguished name, or None."""
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def email_addresses(cert: x509.Certificate) -> list[str]:
    """The rfc822Name entries of the certificate's subjectAltName (RFC 8550 §3)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.RFC822Name))


def describe(cert: x509.Certificate) -> str:
    """A short human label for messages: the common name, else the whole subject."""
    return name_attr(cert.subject, NameOID.COMMON_NAME) or cert.subject.rfc4514_string()


def clip(text: str, limit: int = 64) -> str:
    """Cut a name attribute to the X.520 upper bound (ub-common-name and friends are 64)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- building

Extensions = list[tuple[x509.ExtensionType, bool]]  # (extension, critical)


def key_pem(key: rsa.RSAPrivateKey, password: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def make_name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """A distinguished name, attributes in the order given, empty values left out."""
    return x509.Name([x509.NameAttribute(oid, clip(value)) for oid, value in attrs if value])


def key_usage(*, sign: bool = False, encipher: bool = False, non_repudiation: bool = False,
              ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=non_repudiation, key_encipherment=encipher,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def ca_certificate(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name,
                   signing_key: rsa.RSAPrivateKey, not_before: datetime, days: int,
                   path_length: int, issuer_cert: x509.Certificate | None = None,
                   ) -> x509.Certificate:
    """A CA certificate (RFC 5280 §4.2.1.9: basicConstraints critical, cA, pathLen)."""
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(key_usage(ca=True), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(aki(issuer_cert), False)
    return builder.sign(signing_key, hashes.SHA256())


def aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def host_san(hostnames: Sequence[str], ips: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return x509.SubjectAlternativeName(names)


def load_key(path: Path, password: bytes | None) -> rsa.RSAPrivateKey:
    """A CA private key from a PEM file.

    Raises:
        PkiNotInitialised: unreadable, wrong password, or not RSA.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password)
    except (TypeError, ValueError) as exc:
        # The exception text never contains key material; it says "bad decrypt" and the like.
        raise PkiNotInitialised(f"Clé de l'autorité illisible ({path.name}) : "
                                "mot de passe absent ou incorrect ?") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PkiNotInitialised(f"Clé de l'autorité inattendue ({path.name}) : RSA attendu")
    return key


# ---------------------------------------------------------------------- CMS SignedData
# cryptography signs CMS but cannot verify it; asn1crypto parses it and cryptography checks
# the signature (RFC 5652 §5.4 message digest, §5.6 signature verification).

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}  # no SHA-1 nor MD5: RFC 8551 §2.1 says receivers SHOULD NOT accept them any more


@dataclass(frozen=True)
class SignedContent:
    """What a SignedData whose signatures verified says (the signer is not validated yet)."""

    signer: x509.Certificate
    certificates: list[x509.Certificate]  # every certificate the SignedData carries
    signing_time: datetime | None
    content: bytes


def check_signed_data(der: bytes, detached: bytes | None) -> SignedContent:
    """Verify every SignerInfo of a DER ContentInfo/SignedData over ``detached`` (the content
    of a multipart/signed) or over its encapsulated content.

    Raises:
        MalformedSmime: unreadable structure, or the signer's certificate is not included.
        SignatureInvalid: digest or signature mismatch, or an algorithm we refuse.
    """
    try:
        signed_data = cms.ContentInfo.load(der)["content"]
        choices = signed_data["certificates"]
        certs = [] if isinstance(choices, core.Void) else [
            c.chosen for c in choices if c.name == "certificate"]
        content = detached
        if content is None:
            content = signed_data["encap_content_info"]["content"].native
        if not isinstance(content, bytes) or len(signed_data["signer_infos"]) == 0:
            raise MalformedSmime("Signature S/MIME sans contenu ou sans signataire.")
        signers = [_check_signer_info(info, certs, content)
                   for info in signed_data["signer_infos"]]
        extra = [load_untrusted(c.dump()) for c in certs]
    except CertError:
        raise
    except Exception as exc:  # noqa: BLE001 — hostile ASN.1: asn1crypto and cryptography
        # raise ValueError, IndexError, InvalidVersion, DuplicateExtension… on corrupt input.
        raise MalformedSmime("Signature S/MIME illisible.") from exc
    signer, when = signers[0]
    return SignedContent(signer, extra, when, content)


def load_untrusted(der: bytes) -> x509.Certificate:
    """A certificate that came inside a message, with the fields mss reads parsed now:
    cryptography parses them lazily, and a corrupt one would otherwise fail later, far from
    here (in validation, in a log line)."""
    cert = x509.load_der_x509_certificate(der)
    _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_before_utc,
         cert.not_valid_after_utc, cert.serial_number)
    return cert


def _check_signer_info(info: cms.SignerInfo, certs: list[asn1x509.Certificate],
                       content: bytes) -> tuple[x509.Certificate, datetime | None]:
    cert = _find_signer(info["sid"], certs)
    hash_cls = _HASHES.get(info["digest_algorithm"]["algorithm"].native)
    if hash_cls is None:
        raise SignatureInvalid("Algorithme de hachage de la signature refusé.")
    digest = hashes.Hash(hash_cls())
    digest.update(content)
    attrs = info["signed_attrs"]
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        signed_bytes, when = content, None  # RFC 5652 §5.4: no attributes, content is signed
    else:
        values = {attr["type"].native: attr["values"][0] for attr in attrs}
        if "content_type" not in values or "message_digest" not in values:
            raise MalformedSmime("Attributs signés incomplets (RFC 5652 §5.3).")
        if values["message_digest"].native != digest.finalize():
            raise SignatureInvalid("Le contenu du message a été modifié depuis sa signature.")
        signing_time = values.get("signing_time")
        when = signing_time.native if signing_time is not None else None
        # RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF, not
        # with the [0] IMPLICIT tag they carry inside SignerInfo.
        signed_bytes = attrs.untag().dump()
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureInvalid("Clé du certificat signataire illisible ou d'un type non pris "
                               "en charge.") from exc
    _check_signature(public_key, info["signature_algorithm"], hash_cls,
                     info["signature"].native, signed_bytes)
    return cert, when


def _find_signer(sid: cms.SignerIdentifier,
                 certs: list[asn1x509.Certificate]) -> x509.Certificate:
    chosen = sid.chosen
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            # Serial first: asn1crypto's Name equality normalises every attribute (slow), so
            # compare names only for the one certificate whose serial matches.
            found = (cert.serial_number == chosen["serial_number"].native
                     and (cert.issuer.dump() == chosen["issuer"].dump()
                          or cert.issuer == chosen["issuer"]))
        else:
            found = cert.key_identifier == chosen.native
        if found:
            return load_untrusted(cert.dump())
    raise MalformedSmime("Le certificat du signataire n'est pas joint à la signature.")


def _check_signature(public_key: object, algorithm: algos.SignedDigestAlgorithm,
                     hash_cls: type[hashes.HashAlgorithm], signature: bytes,
                     data: bytes) -> None:
    name = algorithm.signature_algo
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and name == "rsassa_pkcs1v15":
            public_key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        elif isinstance(public_key, rsa.RSAPublicKey) and name == "rsassa_pss":
            params = algorithm["parameters"]
            mgf_hash = _HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]
            pss = padding.PSS(padding.MGF1(mgf_hash()), params["salt_length"].native)
            public_key.verify(signature, data, pss,
                              _HASHES[params["hash_algorithm"]["algorithm"].native]())
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and name == "ecdsa":
            public_key.verify(signature, data, ec.ECDSA(hash_cls()))
        else:
            raise SignatureInvalid(f"Algorithme de signature non pris en charge ({name}).")
    except InvalidSignature as exc:
        raise SignatureInvalid("Signature invalide : le message a été modifié ou la signature "
                               "n'est pas celle du certificat joint.") from exc
