"""The CA: files, certificate profiles, ledger, revocation/CRL and chain validation.

Cross-checked with the ``openssl`` command where an independent opinion matters.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU
from cryptography.x509.oid import NameOID

from certs.errors import (
    CertificateExpired,
    CertificateRevoked,
    PkiNotInitialised,
    UntrustedCertificate,
    WrongPurpose,
)
from certs.models import CertKind, IssuedCertificate
from certs.pki import CardIdentity, Pki
from certs.validation import TrustStore, card_identity, validate
from core.db import Database
from core.errors import ConfigError, NotFound

ORG = "Opérateur MSS de démonstration"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One SQLite ledger for the module (tests that do not care about the engine)."""
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'mss.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki") / "pki", ORG, "mss.test")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("other") / "pki", "Autre opérateur", "autre.test")


@pytest.fixture(scope="module")
def store(pki: Pki) -> TrustStore:
    # Built from ca.pem only: the revocation tests rewrite crl.pem of their own PKI.
    return TrustStore.from_pem(pki.ca_pem_path.read_bytes())


def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          check=False)


# ---------------------------------------------------------------------- the CA itself
def test_create_writes_the_ca_and_is_idempotent(pki: Pki) -> None:
    bundle = x509.load_pem_x509_certificates(pki.ca_pem_path.read_bytes())
    assert bundle == [pki.issuing, pki.root]
    for key_file in ("root.key", "issuing.key"):
        assert stat.S_IMODE((pki.pki_dir / key_file).stat().st_mode) == 0o600
    root_bc = pki.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    issuing_bc = pki.issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (root_bc.ca, root_bc.path_length, issuing_bc.ca, issuing_bc.path_length) == (
        True, 1, True, 0)
    assert pki.issuing.issuer == pki.root.subject
    assert x509.load_pem_x509_crl(pki.crl_path.read_bytes()).issuer == pki.issuing.subject

    again = Pki.create(pki.pki_dir, "Un autre nom", "ignored.test")
    assert (again.root, again.issuing, again.organisation) == (pki.root, pki.issuing, ORG)
    assert Pki.load(pki.pki_dir).domain == "mss.test"
    assert openssl("verify", "-CAfile", pki.pki_dir / "root.pem",
                   pki.pki_dir / "issuing.pem").returncode == 0


def test_load_without_a_ca_says_so(tmp_path: Path) -> None:
    with pytest.raises(PkiNotInitialised, match="n'est pas initialisée"):
        Pki.load(tmp_path / "nothing")
    with pytest.raises(PkiNotInitialised):
        TrustStore.from_pki_dir(tmp_path)


def test_ca_keys_can_be_encrypted_at_rest(tmp_path: Path) -> None:
    Pki.create(tmp_path, ORG, "mss.test", password=b"s3cret")
    assert b"ENCRYPTED" in (tmp_path / "root.key").read_bytes()
    with pytest.raises(PkiNotInitialised, match="mot de passe"):
        Pki.load(tmp_path)
    assert Pki.load(tmp_path, password=b"s3cret").organisation == ORG


# ---------------------------------------------------------------------- profiles
def test_server_certificate(pki: Pki, ledger: Database, store: TrustStore) -> None:
    with ledger.transaction() as session:
        issued = pki.issue_server(session, ["mx.mss.test", "mss.test"], ["127.0.0.1"])
        row = pki.find(session, issued.certificate.serial_number)
        assert row is not None and row.kind is CertKind.SERVER
        assert row.subject_key == "mx.mss.test"
    cert = issued.certificate
    assert san(cert).get_values_for_type(x509.DNSName) == ["mx.mss.test", "mss.test"]
    assert [str(ip) for ip in san(cert).get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ekus(cert) == {EKU.SERVER_AUTH}
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mx.mss.test"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert validate(cert, store, purpose="server") == [cert, pki.issuing, pki.root]
    key = serialization.load_pem_private_key(issued.key_pem(), None)
    assert key.public_key() == cert.public_key()


def test_operator_certificate(pki: Pki, ledger: Database, store: TrustStore) -> None:
    with ledger.transaction() as session:
        cert = pki.issue_operator(session, ["relay.peer.test"], "Opérateur pair").certificate
    assert ekus(cert) == {EKU.SERVER_AUTH, EKU.CLIENT_AUTH}
    assert cert.subject.rfc4514_string() == "CN=relay.peer.test,O=Opérateur pair"
    validate(cert, store, purpose="client")
    validate(cert, store, purpose="server")


def test_mailbox_certificate_is_an_smime_certificate(pki: Pki, ledger: Database,
                                                     tmp_path: Path) -> None:
    with ledger.transaction() as session:
        issued = pki.issue_mailbox(session, "marie.martin@mss.test", "Marie Martin")
    cert = issued.certificate
    assert san(cert).get_values_for_type(x509.RFC822Name) == ["marie.martin@mss.test"]
    assert ekus(cert) == {EKU.EMAIL_PROTECTION}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    (tmp_path / "mbox.pem").write_bytes(issued.cert_pem())
    for purpose in ("smimesign", "smimeencrypt"):
        result = openssl("verify", "-CAfile", pki.ca_pem_path, "-purpose", purpose,
                         tmp_path / "mbox.pem")
        assert result.returncode == 0, result.stdout + result.stderr
    encrypted = issued.key_pem(b"pw")
    assert b"ENCRYPTED" in encrypted
    assert serialization.load_pem_private_key(encrypted, b"pw").public_key() == cert.public_key()


def test_client_certificate(pki: Pki, ledger: Database, store: TrustStore) -> None:
    with ledger.transaction() as session:
        plain = pki.issue_client(session, "Logiciel du cabinet").certificate
        boxed = pki.issue_client(session, "LPS", "lps.cabinet@mss.test").certificate
        row = pki.find(session, boxed.serial_number)
        assert row is not None and row.subject_key == "lps.cabinet@mss.test"
    assert ekus(plain) == {EKU.CLIENT_AUTH}
    assert ekus(boxed) == {EKU.CLIENT_AUTH, EKU.EMAIL_PROTECTION}
    assert san(boxed).get_values_for_type(x509.RFC822Name) == ["lps.cabinet@mss.test"]
    # No SAN at all: cryptography's client verifier must still accept it (see validation.py).
    validate(plain, store, purpose="client")
    validate(boxed, store, purpose="email")


@pytest.mark.parametrize("national_id", ["810000000001", "0751234567"], ids=["rpps", "adeli"])
def test_card_identity_round_trip(pki: Pki, ledger: Database, store: TrustStore,
                                  national_id: str) -> None:
    identity = CardIdentity(national_id, "Élise", "Du Pont-Ménard", "Infirmier",
                            "elise.dupont@mss.test")
    token_key = ec.generate_private_key(ec.SECP256R1())  # as if it lived on a card
    with ledger.transaction() as session:
        cert = pki.issue_card(session, identity, token_key.public_key())
        soft = pki.issue_card_soft(session, identity)
        row = pki.find(session, cert.serial_number)
        assert row is not None and row.subject_key == national_id
    assert card_identity(cert) == identity == card_identity(soft.certificate)
    assert ekus(cert) == {EKU.CLIENT_AUTH, EKU.EMAIL_PROTECTION}
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == f"{national_id}/Élise Du Pont-Ménard"
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.content_commitment
    validate(cert, store, purpose="client")
    without_mail = CardIdentity(national_id, "Paul", "Roux", "Pharmacien")
    with ledger.transaction() as session:
        assert card_identity(pki.issue_card_soft(session, without_mail).certificate) == \
            without_mail


def test_card_identity_refuses_other_certificates(pki: Pki, ledger: Database) -> None:
    with ledger.transaction() as session:
        mailbox = pki.issue_mailbox(session, "x@mss.test", "X").certificate
        with pytest.raises(ValueError, match="identifiant national invalide"):
            pki.issue_card(session, CardIdentity("12345", "A", "B", "Médecin"),
                           ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(WrongPurpose, match="carte"):
        card_identity(mailbox)


# ---------------------------------------------------------------------- validation
def test_validate_distinguishes_every_failure(pki: Pki, other_pki: Pki, ledger: Database,
                                              store: TrustStore) -> None:
    with ledger.transaction() as session:
        good = pki.issue_mailbox(session, "a@mss.test", "A").certificate
        expired = pki.issue_mailbox(session, "b@mss.test", "B", not_before=NOW - timedelta(
            days=400), not_after=NOW - timedelta(days=1)).certificate
        server = pki.issue_server(session, ["mx.mss.test"]).certificate
        foreign = other_pki.issue_mailbox(session, "a@autre.test", "A").certificate

    assert validate(good, store, purpose="email") == [good, pki.issuing, pki.root]
    with pytest.raises(UntrustedCertificate, match="non reconnu"):
        validate(foreign, store, purpose="email")
    with pytest.raises(CertificateExpired, match="expiré le"):
        validate(expired, store, purpose="email")
    with pytest.raises(CertificateExpired, match="pas encore valide"):
        validate(good, store, purpose="email", at=NOW - timedelta(days=1))
    with pytest.raises(WrongPurpose, match="messagerie sécurisée"):
        validate(server, store, purpose="email")
    with pytest.raises(WrongPurpose):
        validate(good, store, purpose="server")


def test_validate_with_intermediates_given_by_the_peer(pki: Pki, ledger: Database) -> None:
    root_only = TrustStore.from_pem(pki.root.public_bytes(serialization.Encoding.PEM))
    with ledger.transaction() as session:
        cert = pki.issue_mailbox(session, "c@mss.test", "C").certificate
    assert validate(cert, root_only, purpose="email", intermediates=[pki.issuing])[-1] == pki.root
    with pytest.raises(UntrustedCertificate):
        validate(cert, root_only, purpose="email")


def test_trust_store_refuses_a_foreign_crl(pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(ConfigError, match="révocation"):
        TrustStore.from_pem(pki.ca_pem_path.read_bytes(), other_pki.crl_path.read_bytes())
    with pytest.raises(ConfigError):
        TrustStore.from_pem(pki.issuing.public_bytes(serialization.Encoding.PEM))


# ---------------------------------------------------------------------- ledger and CRL
def test_ledger_revocation_and_crl(db: Database, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: rows written, revocation recorded, CRL published."""
    pki = Pki.create(tmp_path / "pki", ORG, "mss.test")
    with db.transaction() as session:
        kept = pki.issue_mailbox(session, "kept@mss.test", "Kept").certificate
        lost = pki.issue_mailbox(session, "lost@mss.test", "Lost").certificate
    with db.transaction() as session:
        rows = {r.subject_key: r for r in session.query(IssuedCertificate).all()}
        assert set(rows) == {"kept@mss.test", "lost@mss.test"}
        row = rows["lost@mss.test"]
        assert row.serial == format(lost.serial_number, "x")
        assert row.kind is CertKind.MAILBOX and row.subject == lost.subject.rfc4514_string()
        assert row.not_after == lost.not_valid_after_utc and row.revoked_at is None
        assert x509.load_pem_x509_certificate(row.pem.encode()) == lost
        # As an operator would type it from `openssl x509 -serial`: upper case with colons.
        colon_hex = ":".join(f"{b:02X}" for b in lost.serial_number.to_bytes(20, "big"))
        pki.revoke(session, colon_hex, "keyCompromise")
        with pytest.raises(NotFound, match="inconnu"):
            pki.revoke(session, 12345)
        with pytest.raises(ValueError, match="motif"):
            pki.revoke(session, kept.serial_number, "because")
        crl = pki.make_crl(session)
    with db.transaction() as session:
        revoked = pki.find(session, lost.serial_number)
        valid = pki.find(session, kept.serial_number)
        assert revoked is not None and revoked.revoked_at is not None
        assert revoked.revocation_reason == "keyCompromise"
        assert valid is not None and valid.revoked_at is None

    assert crl.get_revoked_certificate_by_serial_number(lost.serial_number) is not None
    assert len(crl) == 1
    text = openssl("crl", "-noout", "-text", "-in", pki.crl_path).stdout
    assert format(lost.serial_number, "X") in text.replace(":", "")
    assert "Key Compromise" in text
    store = TrustStore.from_pki_dir(pki.pki_dir)
    with pytest.raises(CertificateRevoked, match="Certificat révoqué .numéro de série"):
        validate(lost, store, purpose="email")
    validate(kept, store, purpose="email")

    # crl.pem also carries the root's CRL, so OpenSSL can check the whole chain.
    for name, cert in (("kept", kept), ("lost", lost)):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    check = ("verify", "-CAfile", pki.ca_pem_path, "-CRLfile", pki.crl_path, "-crl_check_all",
             "-purpose", "smimesign")
    assert openssl(*check, tmp_path / "kept.pem").returncode == 0
    refused = openssl(*check, tmp_path / "lost.pem")
    assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr
