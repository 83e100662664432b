"""Renewing our own certificates through the real ``mss`` command on a data directory made by
``mss init``: ``mss cert renew server|operator`` by our CA (new key, same subject and names,
later end, chain to ``ca.pem`` checked by ``openssl verify`` too, ``*.prev``, ledger, audit),
``--dry-run``, ``renew crl``; for another CA, ``renew --csr`` (a PKCS#10 request parsed with
cryptography and ``openssl req -verify``) then ``mss cert install`` of what a stand-in
"IGC Santé" CA signed — and every bad input a careless or hostile operator could give
(another key's certificate, an expired one, a key or a request instead of a certificate, a
broken chain, the wrong usage, another DN, no pending key) refused with one ``Erreur :`` line
and nothing changed."""

from __future__ import annotations

import json
import shutil
import ssl
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select, text

from certs import _x509util as xu
from certs.models import CertKind, IssuedCertificate
from certs.pki import Pki
from certs.validation import TrustStore, validate
from core.db import Database
from core.settings import Settings
from tests.test_cli import assert_clean_error, mss

EKU = ExtendedKeyUsageOID
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``mss init`` data directory, copied by each test (``data``)."""
    data = tmp_path_factory.mktemp("renew") / "data"
    result = mss(data, "init", "--domain", "mss.test")
    assert result.returncode == 0, result.stderr
    return data


@pytest.fixture
def data(initialised: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "data"
    shutil.copytree(initialised, copy)
    yield copy


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_of(path: Path) -> bytes:
    return spki(serialization.load_pem_private_key(path.read_bytes(), None).public_key())


def ext(cert: x509.Certificate | x509.CertificateSigningRequest, kind: type) -> object:
    return cert.extensions.get_extension_for_class(kind).value


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def audit_rows(data: Path, action: str) -> list[tuple[str, dict[str, object], str]]:
    db = Database(Settings.load(data_dir=data, environ={}).effective_database_url)
    try:
        with db.read() as session:
            rows = session.execute(text(
                "SELECT target, request, outcome FROM audit_record WHERE action = :a "
                "ORDER BY id"), {"a": action}).all()
            return [(t, json.loads(r), o) for t, r, o in rows]
    finally:
        db.dispose()


def ledger(data: Path, serial: int) -> tuple[str, str] | None:
    """(kind, subject) of the ledger row of ``serial``."""
    db = Database(Settings.load(data_dir=data, environ={}).effective_database_url)
    try:
        with db.read() as session:
            row = session.scalars(select(IssuedCertificate).where(
                IssuedCertificate.serial == format(serial, "x"))).one_or_none()
            return None if row is None else (row.kind.value, row.subject)
    finally:
        db.dispose()


def expiring_soon(data: Path, kind: str, days: int = 10) -> x509.Certificate:
    """Replace ``kind``'s certificate by one of our CA's ending in ``days`` (what an operator
    has in hand when the alert fires), same subject and names as ``mss init`` gave it."""
    pki_dir = data / "pki"
    settings = Settings.load(data_dir=data, environ={})
    pki = Pki.load(pki_dir, password=settings.secret())
    db = Database(settings.effective_database_url)
    with db.transaction() as session:
        old = load(pki_dir / f"{kind}.crt")
        issued = pki.reissue(session, CertKind(kind), old, valid_days=days)
    db.dispose()
    (pki_dir / f"{kind}.crt").write_bytes(issued.cert_pem())
    (pki_dir / f"{kind}.key").write_bytes(issued.key_pem())
    return issued.certificate


# ---------------------------------------------------------------- by our own CA
@pytest.mark.parametrize("kind", ["server", "operator"])
def test_renew_by_our_ca(data: Path, kind: str) -> None:
    pki_dir = data / "pki"
    old = expiring_soon(data, kind)
    old_cert_bytes = (pki_dir / f"{kind}.crt").read_bytes()
    old_key_bytes = (pki_dir / f"{kind}.key").read_bytes()
    result = mss(data, "cert", "renew", kind)
    assert result.returncode == 0, result.stderr
    new = load(pki_dir / f"{kind}.crt")
    # A new key, in the key file, matching the certificate.
    assert spki(new.public_key()) != spki(old.public_key())
    assert key_of(pki_dir / f"{kind}.key") == spki(new.public_key())
    assert stat.S_IMODE((pki_dir / f"{kind}.key").stat().st_mode) == 0o600
    # Same subject, names and usages; a later end; a new serial.
    assert new.subject == old.subject
    assert ext(new, x509.SubjectAlternativeName) == ext(old, x509.SubjectAlternativeName)
    assert ext(new, x509.ExtendedKeyUsage) == ext(old, x509.ExtendedKeyUsage)
    assert ext(new, x509.KeyUsage) == ext(old, x509.KeyUsage)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > old.not_valid_after_utc + timedelta(days=365)
    # The chain verifies against ca.pem (our validator and OpenSSL's).
    purpose = "server" if kind == "server" else "client"
    chain = validate(new, TrustStore.from_pki_dir(pki_dir), purpose=purpose)  # type: ignore[arg-type]
    assert chain[-1].subject == load(pki_dir / "root.pem").subject
    checked = openssl("verify", "-CAfile", pki_dir / "ca.pem", "-purpose", "sslserver",
                      pki_dir / f"{kind}.crt")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The previous pair kept, byte for byte, the key still private.
    assert (pki_dir / f"{kind}.crt.prev").read_bytes() == old_cert_bytes
    assert (pki_dir / f"{kind}.key.prev").read_bytes() == old_key_bytes
    assert stat.S_IMODE((pki_dir / f"{kind}.key.prev").stat().st_mode) == 0o600
    # Days before and after, the ledger row, the audit record.
    assert "jours restants : 10.0 → 1095.0" in result.stdout
    assert "Prise en compte sans redémarrage" in result.stdout
    assert ledger(data, new.serial_number) == (kind, new.subject.rfc4514_string())
    records = audit_rows(data, "cert.renew")
    assert records[-1][0] == kind and records[-1][2] == "ok"
    assert records[-1][1]["previous"] == format(old.serial_number, "x")
    assert records[-1][1]["serial"] == format(new.serial_number, "x")
    assert mss(data, "audit", "verify").returncode == 0
    status = mss(data, "cert", "status")
    assert status.returncode == 0, status.stdout  # nothing under 30 days any more


def test_renew_days_and_dry_run(data: Path) -> None:
    pki_dir = data / "pki"
    before = {p.name: p.read_bytes() for p in pki_dir.iterdir()}
    dry = mss(data, "cert", "renew", "operator", "--dry-run", "--days", "400")
    assert dry.returncode == 0, dry.stderr
    assert "Rien n'a été écrit (--dry-run)" in dry.stdout and "Renouvellerait" in dry.stdout
    assert {p.name: p.read_bytes() for p in pki_dir.iterdir()} == before
    assert not audit_rows(data, "cert.renew")
    done = mss(data, "cert", "renew", "server", "--days", "400")
    assert done.returncode == 0, done.stderr
    days = (load(pki_dir / "server.crt").not_valid_after_utc - datetime.now(UTC)).days
    assert 398 <= days <= 400


def test_renew_crl_is_mss_cert_crl(data: Path) -> None:
    crl_path = data / "pki" / "crl.pem"

    def number() -> int:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        return int(ext(crl, x509.CRLNumber).crl_number)  # type: ignore[attr-defined]

    first = number()
    renewed = mss(data, "cert", "renew", "crl")
    assert renewed.returncode == 0, renewed.stderr
    second = number()
    assert second > first
    plain = mss(data, "cert", "crl")
    assert number() > second
    # One implementation: the same words (the date may move by a minute).
    assert renewed.stdout.split("(")[0] == plain.stdout.split("(")[0]
    assert_clean_error(mss(data, "cert", "renew", "crl", "--days", "3"), "liste de révocation")


def test_renew_refuses_what_it_cannot_do(data: Path) -> None:
    pki_dir = data / "pki"
    foreign = _ExternalCa()
    key = rsa.generate_private_key(65537, 2048)
    leaf = foreign.sign(load(pki_dir / "operator.crt").subject, key.public_key(),
                        [EKU.SERVER_AUTH, EKU.CLIENT_AUTH], ["mss.test"])
    (pki_dir / "operator.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    refused = mss(data, "cert", "renew", "operator")
    assert_clean_error(refused, "pas par l'autorité de mss")
    assert "--csr" in refused.stderr
    assert load(pki_dir / "operator.crt") == leaf
    (pki_dir / "server.crt").unlink()
    assert_clean_error(mss(data, "cert", "renew", "server"), "lancez d'abord « mss init »")
    assert_clean_error(mss(data, "cert", "renew", "operator", "--csr", str(data / "r.csr"),
                           "--days", "10"), "--days")
    unknown = mss(data, "cert", "renew", "mailbox")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


# ---------------------------------------------------------------- another CA: request, install
class _ExternalCa:
    """A stand-in for the IGC Santé (or a public CA): root + intermediate, EC keys."""

    def __init__(self, name: str = "IGC Santé test") -> None:
        now = NOW - timedelta(days=1)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                               x509.NameAttribute(NameOID.COMMON_NAME, f"{name} racine")])
        self.root = xu.ca_certificate(root_name, self.root_key, root_name,  # type: ignore[arg-type]
                                      self.root_key, now, 3650, 1)  # type: ignore[arg-type]
        self.key = ec.generate_private_key(ec.SECP256R1())
        issuing = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{name} serveurs")])
        self.issuing = xu.ca_certificate(issuing, self.key, root_name,  # type: ignore[arg-type]
                                         self.root_key, now, 1825, 0,  # type: ignore[arg-type]
                                         issuer_cert=self.root)

    def sign(self, subject: x509.Name, public_key: object, ekus: list[x509.ObjectIdentifier],
             dns: list[str], days: int = 365, start: datetime | None = None) -> x509.Certificate:
        start = start or NOW - timedelta(hours=1)
        return (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(self.issuing.subject).public_key(public_key)  # type: ignore[arg-type]
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(xu.key_usage(sign=True, encipher=True), True)
                .add_extension(x509.ExtendedKeyUsage(ekus), False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]),
                               False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                    public_key), False)  # type: ignore[arg-type]
                .add_extension(xu.aki(self.issuing), False)
                .sign(self.key, hashes.SHA256()))

    def sign_request(self, csr: x509.CertificateSigningRequest,
                     ekus: list[x509.ObjectIdentifier] | None = None, **kw: object
                     ) -> x509.Certificate:
        dns = ext(csr, x509.SubjectAlternativeName).get_values_for_type(  # type: ignore[attr-defined]
            x509.DNSName)
        ekus = ekus if ekus is not None else list(ext(csr, x509.ExtendedKeyUsage))  # type: ignore[call-overload]
        return self.sign(csr.subject, csr.public_key(), ekus, dns, **kw)  # type: ignore[arg-type]

    def pem(self, *certs: x509.Certificate) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_request_for_another_ca(data: Path) -> None:
    pki_dir = data / "pki"
    current = load(pki_dir / "operator.crt")
    cert_before = (pki_dir / "operator.crt").read_bytes()
    dry = mss(data, "cert", "renew", "operator", "--csr", str(data / "op.csr"), "--dry-run")
    assert dry.returncode == 0 and not (data / "op.csr").exists()
    assert not (pki_dir / "operator.key.new").exists()
    result = mss(data, "cert", "renew", "operator", "--csr", str(data / "op.csr"))
    assert result.returncode == 0, result.stderr
    assert "mss cert install operator" in result.stdout and "IGC Santé" in result.stdout
    csr = x509.load_pem_x509_csr((data / "op.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject == current.subject
    assert ext(csr, x509.SubjectAlternativeName) == ext(current, x509.SubjectAlternativeName)
    assert set(ext(csr, x509.ExtendedKeyUsage)) == {EKU.SERVER_AUTH, EKU.CLIENT_AUTH}  # type: ignore[call-overload]
    pending = pki_dir / "operator.key.new"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert key_of(pending) == spki(csr.public_key())
    assert spki(csr.public_key()) != spki(current.public_key())
    assert (pki_dir / "operator.crt").read_bytes() == cert_before  # nothing in service changed
    checked = openssl("req", "-in", data / "op.csr", "-noout", "-verify")
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr
    # Asked again (the file was lost): the same pending key, a request for it.
    again = mss(data, "cert", "renew", "operator", "--csr", str(data / "op2.csr"))
    assert again.returncode == 0 and "réutilisée" in again.stdout
    csr2 = x509.load_pem_x509_csr((data / "op2.csr").read_bytes())
    assert spki(csr2.public_key()) == spki(csr.public_key())
    assert [r[1]["method"] for r in audit_rows(data, "cert.renew")] == ["csr", "csr"]


def _request(data: Path, kind: str) -> x509.CertificateSigningRequest:
    result = mss(data, "cert", "renew", kind, "--csr", str(data / f"{kind}.csr"))
    assert result.returncode == 0, result.stderr
    return x509.load_pem_x509_csr((data / f"{kind}.csr").read_bytes())


def test_install_refuses_bad_input(data: Path) -> None:
    pki_dir = data / "pki"
    ca = _ExternalCa()
    (pki_dir / "peers").mkdir(exist_ok=True)
    (pki_dir / "peers" / "igc.pem").write_bytes(ca.pem(ca.root))
    assert_clean_error(mss(data, "cert", "install", "operator", str(data / "x.pem")),
                       "aucune clé en attente")
    csr = _request(data, "operator")
    files_before = {p.name: p.read_bytes() for p in pki_dir.iterdir() if p.is_file()}

    def refused(name: str, content: bytes, text: str, *extra: str) -> None:
        (data / name).write_bytes(content)
        assert_clean_error(mss(data, "cert", "install", "operator", str(data / name), *extra),
                           text)
        after = {p.name: p.read_bytes() for p in pki_dir.iterdir() if p.is_file()}
        assert after == files_before, name  # nothing swapped, the pending key kept

    other_key = rsa.generate_private_key(65537, 2048)
    refused("other.pem", ca.pem(ca.sign(csr.subject, other_key.public_key(),
                                        [EKU.SERVER_AUTH, EKU.CLIENT_AUTH], ["mss.test"])),
            "ne correspond pas à la clé en attente")
    refused("expired.pem", ca.pem(ca.sign_request(csr, days=30,
                                                  start=NOW - timedelta(days=60))),
            "a expiré le")
    refused("future.pem", ca.pem(ca.sign_request(csr, start=NOW + timedelta(days=2))),
            "pas encore valable")
    refused("server-only.pem", ca.pem(ca.sign_request(csr, ekus=[EKU.SERVER_AUTH])),
            "ne peut pas servir de certificat opérateur")
    refused("key.pem", (pki_dir / "operator.key").read_bytes(), "clé privée")
    refused("request.pem", (data / "operator.csr").read_bytes(), "demande de certificat")
    refused("passwd", b"root:x:0:0:root:/root:/bin/bash\n", "n'est pas un certificat")
    refused("ca.pem", ca.pem(ca.issuing), "certificat d'autorité")
    stranger = _ExternalCa("Autre AC")
    good = ca.sign_request(csr)
    refused("broken-chain.pem", ca.pem(good, stranger.issuing), "chaîne incohérente")
    other_dn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Autre"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "mss.test")])
    refused("other-dn.pem", ca.pem(ca.sign(other_dn, csr.public_key(),
                                           [EKU.SERVER_AUTH, EKU.CLIENT_AUTH], ["mss.test"])),
            "liste blanche")
    assert_clean_error(mss(data, "cert", "install", "operator", str(data / "nowhere.pem")),
                       "fichier introuvable")
    # Revoked by its own CA, whose CRL we hold: refused as well.
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.issuing.subject)
           .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=7))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(good.serial_number)
                                    .revocation_date(NOW - timedelta(minutes=5)).build())
           .sign(ca.key, hashes.SHA256()))
    (pki_dir / "peers" / "igc.pem").write_bytes(ca.pem(ca.root, ca.issuing)
                                                + crl.public_bytes(serialization.Encoding.PEM))
    files_before = {p.name: p.read_bytes() for p in pki_dir.iterdir() if p.is_file()}
    refused("revoked.pem", ca.pem(good, ca.issuing), "révoqué")
    assert not audit_rows(data, "cert.install")


def test_install_what_the_ca_signed(data: Path) -> None:
    pki_dir = data / "pki"
    ca = _ExternalCa()
    (pki_dir / "peers").mkdir(exist_ok=True)
    (pki_dir / "peers" / "igc.pem").write_bytes(ca.pem(ca.root))
    old_cert, old_key = ((pki_dir / n).read_bytes() for n in ("operator.crt", "operator.key"))
    csr = _request(data, "operator")
    pending = (pki_dir / "operator.key.new").read_bytes()
    signed = ca.sign_request(csr, days=730)
    # As some CAs send it: the intermediate first, the root in the chain file.
    (data / "signed.pem").write_bytes(ca.pem(ca.issuing, signed))
    (data / "chain.pem").write_bytes(ca.pem(ca.root))
    dry = mss(data, "cert", "install", "operator", str(data / "signed.pem"), "--chain",
              str(data / "chain.pem"), "--dry-run")
    assert dry.returncode == 0 and "Rien n'a été installé" in dry.stdout
    assert (pki_dir / "operator.crt").read_bytes() == old_cert
    done = mss(data, "cert", "install", "operator", str(data / "signed.pem"), "--chain",
               str(data / "chain.pem"))
    assert done.returncode == 0, done.stderr
    assert "chaîne vérifiée jusqu'à « " in done.stdout and "IGC Santé test racine" in done.stdout
    installed = x509.load_pem_x509_certificates((pki_dir / "operator.crt").read_bytes())
    assert installed == [signed, ca.issuing]  # the leaf, then its chain without the root
    assert (pki_dir / "operator.key").read_bytes() == pending
    assert stat.S_IMODE((pki_dir / "operator.key").stat().st_mode) == 0o600
    assert not (pki_dir / "operator.key.new").exists()
    assert (pki_dir / "operator.crt.prev").read_bytes() == old_cert
    assert (pki_dir / "operator.key.prev").read_bytes() == old_key
    assert "→ 730.0" in done.stdout or "→ 729.9" in done.stdout
    (target, request, outcome), = audit_rows(data, "cert.install")
    assert target == "operator" and outcome == "ok" and request["chain_verified"] is True
    assert request["serial"] == format(signed.serial_number, "x")
    # The files the services read fit together (what OpenSSL will load).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki_dir / "operator.crt", pki_dir / "operator.key")
    # Installing again: no pending key any more.
    assert_clean_error(mss(data, "cert", "install", "operator", str(data / "signed.pem")),
                       "aucune clé en attente")
    # After the swap the certificate is not our CA's: renewing says how.
    assert_clean_error(mss(data, "cert", "renew", "operator"), "--csr")


def test_install_a_server_certificate_from_an_unknown_root(data: Path) -> None:
    """A public CA's certificate, DER, root not known here: installed, with a warning; the
    names the old certificate had and the new one lacks are listed."""
    pki_dir = data / "pki"
    ca = _ExternalCa("AC publique")
    csr = _request(data, "server")
    signed = ca.sign(csr.subject, csr.public_key(), [EKU.SERVER_AUTH], ["localhost", "mss.test"])
    (data / "server.der").write_bytes(signed.public_bytes(serialization.Encoding.DER))
    done = mss(data, "cert", "install", "server", str(data / "server.der"))
    assert done.returncode == 0, done.stderr
    assert "Attention : chaîne non vérifiée" in done.stdout
    assert "Attention : noms absents du nouveau certificat : mail.mss.test" in done.stdout
    assert load(pki_dir / "server.crt") == signed
    assert key_of(pki_dir / "server.key") == spki(csr.public_key())
