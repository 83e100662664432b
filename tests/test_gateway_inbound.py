"""gateway.accept.opening: forged Authentication-Results stripped, messages opened and verified, the
verdict stamped (RFC 8601 / RFC 7281), with ``openssl cms`` as the independent other side."""

from __future__ import annotations

import email
import email.policy
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import smime
from certs.errors import UntrustedCertificate, WrongPurpose
from certs.pki import Issued, Pki, Validity
from certs.validation import TrustStore, ValidationCache
from core.db import Database
from gateway.accept import opening
from gateway.accept.forms import SecurityContext, secure
from gateway.accept.keys import KeyRing
from gateway.accept.opening import Verdict
from trust_space.models import Mailbox, MailboxKind

NOW = datetime.now(UTC)
OUTER = (b"From: Alice Martin <alice@mss.test>\r\n"
         b"To: bob@mss.test\r\n"
         b"Subject: Compte rendu\r\n"
         b"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n"
         b"Message-ID: <abc@mss.test>\r\n")
ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nBonjour,\r\nresultats.\r\n"
MESSAGE = OUTER + b"MIME-Version: 1.0\r\n" + ENTITY
OURS = "mss.test"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway_inbound")


@pytest.fixture(scope="module")
def ledger(workdir: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{workdir / 'x.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    return Pki.create(workdir / "pki", "Test", "mss.test")


@pytest.fixture(scope="module")
def store(pki: Pki) -> TrustStore:
    return TrustStore.from_pem(pki.ca_pem_path.read_bytes())


def _issue(pki: Pki, ledger: Database, address: str, **validity: Unpack[Validity]) -> Issued:
    with ledger.transaction() as session:
        return pki.issue_mailbox(session, address, address.split("@")[0].title(), **validity)


@pytest.fixture(scope="module")
def alice(pki: Pki, ledger: Database) -> Issued:
    return _issue(pki, ledger, "alice@mss.test")


@pytest.fixture(scope="module")
def bob(pki: Pki, ledger: Database) -> Issued:
    return _issue(pki, ledger, "bob@mss.test")


def _pair(issued: Issued) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    assert issued.private_key is not None
    return issued.certificate, issued.private_key


def _sign(pki: Pki, who: Issued, message: bytes = MESSAGE) -> bytes:
    cert, key = _pair(who)
    return smime.sign(message, cert, key, [pki.issuing])


def openssl(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def _results(raw: bytes) -> list[str]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return [str(v) for v in parsed.get_all("Authentication-Results", [])]


# ---------------------------------------------------------------------- strip_forged
FORGED = [
    b"Authentication-Results: mss.test; smime=pass\r\n",
    b"AUTHENTICATION-RESULTS: MSS.TEST; smime=pass\r\n",
    b"Authentication-Results: (relais) mss.test 1; smime=pass\r\n",
    b'Authentication-Results: "mss.test"; smime=pass\r\n',
    b"Authentication-Results: mss.test.; smime=pass\r\n",
    b"Authentication-Results:\r\n mss.test;\r\n\tsmime=pass body.smime-identity=x@y.z\r\n",
    b"authentication-results : (a (nested) comment)mss.test;smime=pass\r\n",
]
KEPT = [
    b"Authentication-Results: autre.test; smime=pass\r\n",
    b"Authentication-Results: mss.test.evil; dkim=pass\r\n",
    b"Authentication-Results: relay.mss.test; spf=pass\r\n",
    b"X-Authentication-Results: mss.test; smime=pass\r\n",
]


def test_strip_forged_removes_ours_keeps_others() -> None:
    raw = b"Received: x\r\n" + b"".join(FORGED) + b"".join(KEPT) + MESSAGE
    assert opening.strip_forged(raw, OURS) == b"Received: x\r\n" + b"".join(KEPT) + MESSAGE
    assert opening.strip_forged(raw, "MSS.Test") == b"Received: x\r\n" + b"".join(KEPT) + MESSAGE
    lf = raw.replace(b"\r\n", b"\n")
    assert opening.strip_forged(lf, OURS) == (b"Received: x\r\n" + b"".join(KEPT) + MESSAGE
                                              ).replace(b"\r\n", b"\n")
    # In the body, a line that looks like the field is content: left alone.
    body_line = MESSAGE + FORGED[0]
    assert opening.strip_forged(body_line, OURS) is body_line


@pytest.mark.parametrize(("value", "expected"), [
    ("mss.test; smime=pass", "mss.test"), (" (c) \"a\\\"b\" 1; none", 'a"b'),
    ("(unterminated", None), ("", None), ("; smime=pass", None),
])
def test_authserv_id_of(value: str, expected: str | None) -> None:
    assert opening.authserv_id_of(value) == expected


# ---------------------------------------------------------------------- open_message
def test_plain_message_is_none(store: TrustStore) -> None:
    out, verdict = opening.open_message(MESSAGE, key=None, store=store)
    assert out is MESSAGE
    assert verdict == Verdict("none", None, False, "message non signé", None)


def test_signed_by_the_sender_passes(pki: Pki, alice: Issued, store: TrustStore) -> None:
    signed = _sign(pki, alice)
    out, verdict = opening.open_message(signed, key=None, store=store)
    assert out is signed
    assert (verdict.result, verdict.signer, verdict.encrypted) == ("pass", "alice@mss.test",
                                                                   False)
    assert verdict.error_code is None


def test_signed_and_encrypted_opens_and_keeps_the_signature(
        pki: Pki, alice: Issued, bob: Issued, store: TrustStore, workdir: Path) -> None:
    sealed = smime.encrypt(_sign(pki, alice), [bob.certificate])
    out, verdict = opening.open_message(sealed, key=_pair(bob), store=store)
    assert (verdict.result, verdict.signer, verdict.encrypted) == ("pass", "alice@mss.test",
                                                                   True)
    assert out.startswith(OUTER) and smime.is_signed(out)
    # A client can verify the kept structure again against ca.pem.
    (workdir / "delivered.eml").write_bytes(opening.stamp(out, verdict, OURS))
    content = openssl("cms", "-verify", "-CAfile", pki.ca_pem_path, "-purpose", "smimesign",
                      "-in", workdir / "delivered.eml")
    assert content.replace(b"\r\n", b"\n") == ENTITY.replace(b"\r\n", b"\n")


def test_encrypted_unsigned(bob: Issued, store: TrustStore) -> None:
    out, verdict = opening.open_message(smime.encrypt(MESSAGE, [bob.certificate]),
                                        key=_pair(bob), store=store)
    assert out == MESSAGE
    assert (verdict.result, verdict.encrypted, verdict.error_code) == ("none", True, None)


def test_envelope_without_key_is_left_closed(bob: Issued, store: TrustStore) -> None:
    sealed = smime.encrypt(MESSAGE, [bob.certificate])
    out, verdict = opening.open_message(sealed, key=None, store=store)
    assert out is sealed
    assert (verdict.result, verdict.encrypted, verdict.error_code) == ("none", True, "no_key")


def test_envelope_for_another_key_fails(alice: Issued, bob: Issued, store: TrustStore) -> None:
    sealed = smime.encrypt(MESSAGE, [bob.certificate])
    out, verdict = opening.open_message(sealed, key=_pair(alice), store=store)
    assert out is sealed
    assert (verdict.result, verdict.error_code) == ("fail", "decrypt_failed")
    broken = sealed[: len(sealed) // 2]
    assert opening.open_message(broken, key=_pair(bob), store=store)[1].error_code == (
        "malformed_smime")


def test_tampered_signature_fails(pki: Pki, alice: Issued, bob: Issued,
                                  store: TrustStore) -> None:
    tampered = _sign(pki, alice).replace(b"Bonjour", b"Bonsoir")
    out, verdict = opening.open_message(tampered, key=None, store=store)
    assert out is tampered
    assert (verdict.result, verdict.error_code) == ("fail", "bad_signature")
    assert "modifié" in verdict.reason
    sealed = smime.encrypt(tampered, [bob.certificate])  # also inside an envelope
    verdict = opening.open_message(sealed, key=_pair(bob), store=store)[1]
    assert (verdict.result, verdict.error_code, verdict.encrypted) == ("fail", "bad_signature",
                                                                       True)


def test_signer_of_another_ca_is_untrusted(workdir: Path, ledger: Database,
                                           store: TrustStore) -> None:
    other = Pki.create(workdir / "other", "Autre", "autre.test")
    mallory = _issue(other, ledger, "alice@mss.test")  # even claiming the right address
    verdict = opening.open_message(_sign(other, mallory), key=None, store=store)[1]
    assert (verdict.result, verdict.error_code) == ("fail", "untrusted")


def test_revoked_and_expired_signers(pki: Pki, ledger: Database) -> None:
    carol = _issue(pki, ledger, "carol@mss.test")
    old = _issue(pki, ledger, "old@mss.test", not_before=NOW - timedelta(days=30),
                 not_after=NOW - timedelta(days=1))
    with ledger.transaction() as session:
        pki.revoke(session, carol.certificate.serial_number, "keyCompromise")
        crl = pki.make_crl(session)
    store = TrustStore.from_pem(pki.ca_pem_path.read_bytes(),
                                crl.public_bytes(serialization.Encoding.PEM))
    from_carol = MESSAGE.replace(b"Alice Martin <alice@mss.test>", b"carol@mss.test")
    verdict = opening.open_message(_sign(pki, carol, from_carol), key=None, store=store)[1]
    assert (verdict.result, verdict.error_code) == ("fail", "revoked")
    from_old = MESSAGE.replace(b"Alice Martin <alice@mss.test>", b"old@mss.test")
    verdict = opening.open_message(_sign(pki, old, from_old), key=None, store=store)[1]
    assert (verdict.result, verdict.error_code) == ("fail", "expired")


@pytest.mark.parametrize("from_field", [
    b"From: Bob <bob@mss.test>\r\n",
    b"From: alice@mss.test, bob@mss.test\r\n",
    b"From: alice@mss.test <bob@mss.test>\r\n",  # parses into two addresses: not both Alice's
    b"From: \"alice@mss.test\" <mallory@autre.test>\r\n",
])
def test_valid_signature_by_someone_else_than_from_fails(
        pki: Pki, alice: Issued, store: TrustStore, from_field: bytes) -> None:
    message = MESSAGE.replace(b"From: Alice Martin <alice@mss.test>\r\n", from_field)
    verdict = opening.open_message(_sign(pki, alice, message), key=None, store=store)[1]
    assert (verdict.result, verdict.error_code) == ("fail", "from_mismatch")
    assert verdict.signer == "alice@mss.test" and "From" in verdict.reason


def test_missing_or_repeated_from_fails(pki: Pki, alice: Issued, store: TrustStore) -> None:
    no_from = MESSAGE.replace(b"From: Alice Martin <alice@mss.test>\r\n", b"")
    twice = b"From: alice@mss.test\r\n" + MESSAGE
    for message in (no_from, twice):
        verdict = opening.open_message(_sign(pki, alice, message), key=None, store=store)[1]
        assert (verdict.result, verdict.error_code) == ("fail", "no_from")


def test_sender_address_match_is_case_insensitive(pki: Pki, alice: Issued,
                                                  store: TrustStore) -> None:
    message = MESSAGE.replace(b"<alice@mss.test>", b"<Alice@MSS.test>")
    assert opening.open_message(_sign(pki, alice, message), key=None,
                                store=store)[1].result == "pass"


# ---------------------------------------------------------------------- stamp
def test_stamp_format_and_forgery_removed(pki: Pki, alice: Issued, bob: Issued,
                                          store: TrustStore) -> None:
    forged = FORGED[0] + KEPT[0]
    sealed = smime.encrypt(forged + _sign(pki, alice), [bob.certificate])
    out, verdict = opening.open_message(sealed, key=_pair(bob), store=store)
    stamped = opening.stamp(out, verdict, OURS)
    assert stamped.startswith(
        b"Authentication-Results: mss.test;\r\n"
        b' smime=pass (encrypted) reason="signature verifiee"\r\n'
        b" body.smime-identity=alice@mss.test\r\n")
    results = _results(stamped)
    assert len(results) == 2 and results[1] == "autre.test; smime=pass"
    assert [opening.authserv_id_of(r) for r in results].count(OURS) == 1
    plain = opening.stamp(MESSAGE.replace(b"\r\n", b"\n"),
                          opening.open_message(MESSAGE, key=None, store=store)[1], OURS)
    assert plain.startswith(b"Authentication-Results: mss.test;\n smime=none (not encrypted)"
                            b' reason="message non signe"\nFrom: ')
    assert b"\r" not in plain


def test_forgery_inside_the_envelope_is_removed(bob: Issued, store: TrustStore,
                                                workdir: Path) -> None:
    # A peer hides our field among the inner entity's header fields: decryption lifts them
    # into the message's header section, where stamp() must still catch it.
    cert = workdir / "bob.pem"
    cert.write_bytes(bob.cert_pem())
    inner = b"Authentication-Results: mss.test; smime=pass\r\n" + ENTITY
    sealed = openssl("cms", "-encrypt", "-aes256", "-from", "alice@mss.test", "-to",
                     "bob@mss.test", "-subject", "Essai", cert, stdin=inner)
    out, verdict = opening.open_message(sealed, key=_pair(bob), store=store)
    assert b"Authentication-Results: mss.test; smime=pass" in out
    stamped = opening.stamp(out, verdict, OURS)
    assert _results(stamped) == [
        'mss.test; smime=none (encrypted) reason="message non signe"']


@pytest.mark.parametrize("signer", [
    "evil@x.y\r\nAuthentication-Results: mss.test; smime=pass",
    'CN=Dr "House"\\, \nX-Injected: 1',
    "é" * 500,
])
def test_stamp_values_cannot_inject(signer: str) -> None:
    verdict = Verdict("fail", signer, False, "raison\r\nX-Injected: oui", "bad_signature")
    stamped = opening.stamp(MESSAGE, verdict, OURS)
    head = stamped.split(b"\r\n\r\n", 1)[0]
    assert stamped.endswith(MESSAGE) and head.isascii()
    assert b"X-Injected" not in b"".join(
        line for line in head.split(b"\r\n") if not line.startswith(b" "))
    parsed = email.message_from_bytes(stamped, policy=email.policy.default)
    assert len(parsed.get_all("Authentication-Results", [])) == 1
    assert "X-Injected" not in parsed and max(map(len, head.split(b"\r\n"))) < 998


def test_crafted_certificate_data_cannot_inject(pki: Pki, store: TrustStore,
                                                workdir: Path) -> None:
    """A valid certificate of our own CA, without address, whose subject carries CR LF
    (issued outside the Pki API, which would refuse it); the verdict names the signer by
    that subject."""
    issuing_key = serialization.load_pem_private_key(
        (workdir / "pki" / "issuing.key").read_bytes(), None)
    assert isinstance(issuing_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(65537, 2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, "a\r\nAuthentication-Results: mss.test; smime=pass")]))
            .issuer_name(pki.issuing.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=5)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                pki.issuing.public_key()), False)  # type: ignore[arg-type]
            .sign(issuing_key, hashes.SHA256()))
    signed = smime.sign(MESSAGE, cert, key, [pki.issuing])
    out, verdict = opening.open_message(signed, key=None, store=store)
    assert (verdict.result, verdict.error_code) == ("fail", "from_mismatch")
    assert verdict.signer is not None and "\r\n" in verdict.signer  # reaches stamp()
    stamped = opening.stamp(out, verdict, OURS)
    parsed = email.message_from_bytes(stamped, policy=email.policy.default)
    assert len(parsed.get_all("Authentication-Results", [])) == 1
    assert stamped.split(b"\r\n\r\n", 1)[0].isascii()


def test_stamp_refuses_bad_arguments() -> None:
    verdict = Verdict("pass", None, False, "ok", None)
    for bad_id in ("mss.test;\r\nX: y", "mss.test\n", "mss test"):
        with pytest.raises(ValueError):
            opening.stamp(MESSAGE, verdict, bad_id)
    with pytest.raises(ValueError):
        opening.stamp(MESSAGE, Verdict("maybe", None, False, "", None), OURS)


# ---------------------------------------------------------------------- own signatures
def _secure_ctx(store: TrustStore, pki: Pki, checks: ValidationCache | None = None
                ) -> SecurityContext:
    return SecurityContext("sign", True, store, OURS, (pki.issuing,), checks)


def test_own_signature_is_stamped_pass_and_still_verifies(pki: Pki, alice: Issued,
                                                          store: TrustStore,
                                                          workdir: Path) -> None:
    """The local form of a message the relay signed: stamped pass without a second
    verification, and the signature it carries verifies in OpenSSL and in certs.smime."""
    asked = MESSAGE.replace(b"MIME-Version", b"MSS-Security: sign\r\nMIME-Version", 1)
    forms = secure(_secure_ctx(store, pki, ValidationCache()), asked,
                            _pair(alice), [])
    assert forms.local is not None and forms.protection == "sign"
    assert _results(forms.local) == [
        'mss.test; smime=pass (not encrypted) reason="signature verifiee" '
        "body.smime-identity=alice@mss.test"]
    assert b"MSS-Security" not in forms.local
    assert smime.verify(forms.local, store).addresses == ["alice@mss.test"]
    (workdir / "own.eml").write_bytes(forms.local)
    openssl("cms", "-verify", "-in", workdir / "own.eml", "-CAfile", pki.ca_pem_path,
            "-out", workdir / "own.out")


def test_own_signature_still_binds_the_from(pki: Pki, alice: Issued,
                                            store: TrustStore) -> None:
    other = MESSAGE.replace(b"From: Alice Martin <alice@mss.test>", b"From: bob@mss.test")
    signed = smime.sign(other, *_pair(alice), [pki.issuing])
    verdict = opening.own_signature(signed, alice.certificate, store, chain=[pki.issuing])
    assert (verdict.result, verdict.error_code) == ("fail", "from_mismatch")
    no_from = MESSAGE.replace(b"From: Alice Martin <alice@mss.test>\r\n", b"")
    verdict = opening.own_signature(smime.sign(no_from, *_pair(alice), [pki.issuing]),
                                    alice.certificate, store, chain=[pki.issuing])
    assert (verdict.result, verdict.error_code) == ("fail", "no_from")


def test_own_signature_of_a_revoked_signer_fails_at_once(pki: Pki, ledger: Database,
                                                         store: TrustStore) -> None:
    """The validation cache never outlives the trust store: a CRL that revokes the signer
    gives a new store, and the next message is stamped fail (revoked)."""
    carol = _issue(pki, ledger, "carol@mss.test")
    checks = ValidationCache()
    signed = smime.sign(MESSAGE.replace(b"alice@", b"carol@"), *_pair(carol), [pki.issuing])
    first = opening.own_signature(signed, carol.certificate, store, chain=[pki.issuing],
                                  checks=checks)
    assert first.result == "pass"
    with ledger.transaction() as session:
        pki.revoke(session, carol.certificate.serial_number, "keyCompromise")
        pki.make_crl(session)
    revoked_store = TrustStore.from_pki_dir(pki.pki_dir)
    # Same store object: the success is remembered (that is the point of the cache) …
    assert opening.own_signature(signed, carol.certificate, store, chain=[pki.issuing],
                                 checks=checks).result == "pass"
    # … a new store (new CRL) is checked again, and failures are never remembered.
    for _ in range(2):
        verdict = opening.own_signature(signed, carol.certificate, revoked_store,
                                        chain=[pki.issuing], checks=checks)
        assert (verdict.result, verdict.error_code) == ("fail", "revoked")
    carol_asks = MESSAGE.replace(b"alice@", b"carol@").replace(
        b"MIME-Version", b"MSS-Security: sign\r\nMIME-Version", 1)
    forms = secure(_secure_ctx(revoked_store, pki, checks), carol_asks,
                            _pair(carol), [])
    assert forms.local is not None
    assert "smime=fail" in _results(forms.local)[0] and "revoque" in _results(forms.local)[0]


def test_validation_cache_respects_ttl_and_failures(pki: Pki, alice: Issued,
                                                    store: TrustStore) -> None:
    stranger = Pki.create(pki.pki_dir.parent / "stranger", "Autre", "autre.test")
    cache = ValidationCache(ttl=0)
    cache.validate(alice.certificate, store, purpose="email", intermediates=[pki.issuing])
    for _ in range(2):
        with pytest.raises(UntrustedCertificate):
            cache.validate(stranger.issuing, store, purpose="email")
    with pytest.raises(WrongPurpose):
        cache.validate(alice.certificate, store, purpose="server",
                       intermediates=[pki.issuing])


def test_keyring_never_signs_with_a_key_that_is_not_the_certificate_s(
        pki: Pki, alice: Issued, bob: Issued, tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.create_all()
    secret = b"k" * 32
    with database.transaction() as session:
        session.add_all([
            Mailbox(address="alice@mss.test", kind=MailboxKind.PERSONAL,
                    smime_cert_pem=alice.cert_pem().decode(),
                    smime_key_pem=alice.key_pem(secret).decode()),
            Mailbox(address="mallory@mss.test", kind=MailboxKind.PERSONAL,
                    smime_cert_pem=alice.cert_pem().decode(),
                    smime_key_pem=bob.key_pem(secret).decode())])
    ring = KeyRing(secret)
    with database.reading() as conn:
        pair = ring.signer(conn, "alice@mss.test")
        assert pair is not None and pair[0] == alice.certificate
        assert ring.signer(conn, "mallory@mss.test") is None
        assert ring.signer(conn, "nobody@mss.test") is None
    database.dispose()


def test_keyring_derives_a_key_once_when_threads_ask_together(
        alice: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key derivation is slow on purpose (~45 ms): eight delivery or SMTP threads asking for
    the same new mailbox at once get one derivation, not eight."""
    import threading

    from gateway.accept import keys

    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.create_all()
    secret = b"k" * 32
    with database.transaction() as session:
        session.add(Mailbox(address="alice@mss.test", kind=MailboxKind.PERSONAL,
                            smime_cert_pem=alice.cert_pem().decode(),
                            smime_key_pem=alice.key_pem(secret).decode()))
    derived: list[int] = []
    real = keys.load_mailbox_key

    def counted(key_pem: str, key_secret: bytes):  # type: ignore[no-untyped-def]
        derived.append(1)
        return real(key_pem, key_secret)

    monkeypatch.setattr(keys, "load_mailbox_key", counted)
    ring, start, pairs = KeyRing(secret), threading.Barrier(8), []

    def ask() -> None:
        start.wait()
        with database.reading() as conn:
            pairs.append(ring.signer(conn, "alice@mss.test"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    database.dispose()
    assert len(derived) == 1 and len(pairs) == 8
    assert all(pair is not None and pair[0] == alice.certificate for pair in pairs)
