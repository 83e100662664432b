"""Two operators on one machine (mss.test and autre.test), set up and linked by mss/pair.py as
``mss demo --pair`` does (each whitelisting the other, trusting its CA and CRL, routing to its
relay, importing its directory), exchanging signed and encrypted mail over the mutually
authenticated relay hop; the hop is captured at the peer and checked with ``openssl cms``."""

from __future__ import annotations

import os
import smtplib
import subprocess
import time
import uuid
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from sqlalchemy import select

from certs import smime
from gateway.accept import usecases
from gateway.accept.protection import load_mailbox_key
from mss.cli import main
from mss.setup import write_pair
from spool.models import DeliveryEvent, QueueRecipient, RecipientState
from trust_space.models import Mailbox, TrustedDomain

if TYPE_CHECKING:
    from tests.gateway_fixtures import Operator

pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures", "tests.pair_fixtures"]
MARIE_A, PAUL_B = "marie.martin@mss.test", "paul.durand@autre.test"


def mss(data_dir: Path, *args: str) -> str:
    """The real ``mss`` command, in this process. ``mss`` sets umask 077 for itself: put this
    process's back, or files created later (Dovecot's master-users) would be unreadable."""
    umask = os.umask(0o022)
    try:
        result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *args],
                                    catch_exceptions=False)
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    return result.output


def new_message(subject: str, sender: str, to: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMSS-Security: sign, encrypt"
            f"\r\nX-MSS-Patient: opaque-123\r\nMessage-ID: <{uuid.uuid4().hex}@test>\r\n\r\n"
            "Compte rendu.\r\n").encode()


def mailbox_pair(op: Operator, address: str, tmp: Path) -> tuple[Path, Path]:
    """A local mailbox's certificate and clear key as files (for openssl)."""
    with op.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == address))
        assert box is not None and box.smime_cert_pem and box.smime_key_pem
        cert_pem, key_pem = box.smime_cert_pem, box.smime_key_pem
    key = load_mailbox_key(key_pem, op.settings.secret())
    from cryptography.hazmat.primitives import serialization

    crt, keyfile = tmp / f"{address}.crt", tmp / f"{address}.key"
    crt.write_text(cert_pem)
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return crt, keyfile


def test_signed_encrypted_message_crosses_the_hop_and_the_reply_comes_back(
        pair: tuple[Operator, Operator, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, tmp = pair
    captured: list[bytes] = []
    real_relay = usecases.relay

    def capture(gw: Any, peer_dn: str, env: usecases.Envelope) -> str:
        captured.append(env.raw)
        return real_relay(gw, peer_dn, env)

    monkeypatch.setattr(usecases, "relay", capture)
    a.submit(MARIE_A, [PAUL_B], new_message("Hop chiffre", MARIE_A, PAUL_B))
    raw = b.wait_for(PAUL_B, lambda r: message_from_bytes(r)["Subject"] == "Hop chiffre")
    results = message_from_bytes(raw)["Authentication-Results"]
    assert results.startswith("autre.test;") and "smime=pass" in results
    assert message_from_bytes(raw)["X-MSS-Patient"] == "opaque-123"
    assert b"MSS-Security" not in raw

    hop = captured[0]
    assert b"Compte rendu" not in hop and b"enveloped-data" in hop
    (tmp / "hop.eml").write_bytes(hop)
    crt, key = mailbox_pair(b, PAUL_B, tmp)
    subprocess.run(["openssl", "cms", "-decrypt", "-in", str(tmp / "hop.eml"), "-recip",
                    str(crt), "-inkey", str(key), "-out", str(tmp / "inner.eml")], check=True)
    verified = subprocess.run(
        ["openssl", "cms", "-verify", "-in", str(tmp / "inner.eml"), "-CAfile",
         str(a.settings.pki_dir / "ca.pem"), "-purpose", "any"],
        capture_output=True, check=True)
    assert b"Compte rendu" in verified.stdout

    b.submit(PAUL_B, [MARIE_A], new_message("Re: Hop chiffre", PAUL_B, MARIE_A))
    reply = a.wait_for(MARIE_A, lambda r: message_from_bytes(r)["Subject"] == "Re: Hop chiffre")
    assert "smime=pass" in message_from_bytes(reply)["Authentication-Results"]


def relay_client(target: Operator, cert: Path, key: Path) -> smtplib.SMTP:
    context = target.space.tls_context()
    context.check_hostname = False
    context.load_cert_chain(str(cert), str(key))
    smtp = smtplib.SMTP("127.0.0.1", target.port("relay"), timeout=30)
    smtp.starttls(context=context)
    smtp.ehlo()
    return smtp


def test_peer_whose_certificate_differs_from_its_whitelist_entry(
        pair: tuple[Operator, Operator, Path]) -> None:
    a, b, tmp = pair
    with a.space.db.transaction() as session:  # chains to a's CA, wrong DN
        issued = a.space.pki.issue_operator(session, ["imposteur.test"], "Operateur Un")
    write_pair(issued, tmp / "impostor.crt", tmp / "impostor.key")
    with relay_client(b, tmp / "impostor.crt", tmp / "impostor.key") as smtp:
        code, text = smtp.mail(MARIE_A)
    assert code == 550 and text.startswith(b"5.7.1") and b"liste blanche" in text


def test_outbound_refuses_a_peer_that_does_not_match(pair: tuple[Operator, Operator, Path]
                                                     ) -> None:
    a, b, _ = pair
    with a.space.db.transaction() as session:
        entry = session.scalar(select(TrustedDomain).where(TrustedDomain.domain == "autre.test"))
        assert entry is not None
        saved, entry.certificate_dn = entry.certificate_dn, "CN=autre.example,O=Faux"
    try:
        queue_id = a.submit(MARIE_A, [PAUL_B], new_message("Detour", MARIE_A, PAUL_B))
        for _ in range(100):
            if a.gateway.metrics.registry.get_sample_value(
                    "mss_tls_failures_total", {"peer": "autre.test"}):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("aucun échec TLS compté")
        assert "deferred" in mss(a.settings.data_dir, "queue", "show", queue_id)
    finally:
        with a.space.db.transaction() as session:
            entry = session.scalar(select(TrustedDomain)
                                   .where(TrustedDomain.domain == "autre.test"))
            entry.certificate_dn = saved  # type: ignore[union-attr]
        mss(a.settings.data_dir, "queue", "retry", queue_id)
    b.wait_for(PAUL_B, lambda r: message_from_bytes(r)["Subject"] == "Detour")


def test_the_probe_finds_the_other_operator_healthy(pair: tuple[Operator, Operator, Path]
                                                    ) -> None:
    """The peers' probe (issue #20) from mss.test to autre.test's real relay: what a delivery
    needs holds (mutual TLS, chain, CRL, whitelist DN), and nothing was sent."""
    from gateway import probe

    a, b, _ = pair
    [found] = probe.check(a.space.db, a.settings, domains=["autre.test"],
                          requested_by="test", actor="test")
    assert found.ok, found.detail
    assert found.port == b.port("relay") and found.tls_version in ("TLSv1.3", "TLSv1.2")
    theirs = x509.load_pem_x509_certificate((b.settings.pki_dir / "operator.crt").read_bytes())
    assert found.subject_dn == theirs.subject.rfc4514_string() and found.dn_match is True
    assert found.chain == "valid" and found.revocation == "good"
    assert found.not_after == theirs.not_valid_after_utc


def relay_tampered(pair: tuple[Operator, Operator, Path], subject: str) -> tuple[int, bytes]:
    """Marie's message signed with her key, then altered, relayed by mss.test's operator
    certificate to autre.test: the DATA reply."""
    a, b, tmp = pair
    crt, key = mailbox_pair(a, MARIE_A, tmp)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    signed = smime.sign(new_message(subject, MARIE_A, PAUL_B),
                        x509.load_pem_x509_certificate(crt.read_bytes()),
                        load_pem_private_key(key.read_bytes(), None))  # type: ignore[arg-type]
    tampered = signed.replace(b"Compte rendu.", b"Compte rendu!")
    pki = a.settings.pki_dir
    with relay_client(b, pki / "operator.crt", pki / "operator.key") as smtp:
        assert smtp.mail(MARIE_A)[0] == 250
        assert smtp.rcpt(PAUL_B)[0] == 250
        return smtp.data(tampered)


def test_tampered_signature_is_refused(pair: tuple[Operator, Operator, Path]) -> None:
    code, text = relay_tampered(pair, "Altere")
    assert code == 550 and text.startswith(b"5.7.7")


def test_tampered_signature_in_quarantine_mode_is_held_then_released(
        pair: tuple[Operator, Operator, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``MSS_BAD_SIGNATURE=quarantine``: accepted, held (not delivered), its timeline says
    so; ``mss queue retry`` releases it and the reader sees the failed signature."""
    _a, b, _tmp = pair
    assert b.gateway.gw is not None
    monkeypatch.setattr(b.gateway.gw, "settings",
                        replace(b.gateway.gw.settings, bad_signature="quarantine"))
    code, text = relay_tampered(pair, "Quarantaine")
    assert code == 250, text
    queue_id = text.decode().rsplit(" ", 1)[1]
    time.sleep(1)  # the workers had their chance: a held message is not delivered
    with b.space.db.read() as session:
        state = session.scalar(select(QueueRecipient.state)
                               .where(QueueRecipient.queue_id == queue_id))
        events = [(e.event, e.detail) for e in session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.queue_id == queue_id)
            .order_by(DeliveryEvent.id))]
    assert state is RecipientState.QUARANTINED
    assert events == [("queued", "local"), ("quarantined", "local bad_signature")]
    assert not any(message_from_bytes(r)["Subject"] == "Quarantaine"
                   for r in b.messages(PAUL_B))
    assert "1" in mss(b.settings.data_dir, "queue", "retry", queue_id)
    raw = b.wait_for(PAUL_B, lambda r: message_from_bytes(r)["Subject"] == "Quarantaine")
    results = message_from_bytes(raw)["Authentication-Results"]
    assert "smime=fail" in results


def test_peer_recipient_without_certificate(pair: tuple[Operator, Operator, Path]) -> None:
    """MSSanté mode: signed only, over the mutual-TLS hop; otherwise a clear refusal."""
    a, b, _ = pair
    julie_b = "julie.bernard@autre.test"
    with a.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == julie_b))
        assert box is not None
        saved, box.smime_cert_pem = box.smime_cert_pem, None
    gw = a.gateway.gw
    assert gw is not None
    try:
        a.submit(MARIE_A, [julie_b], new_message("Sans certificat", MARIE_A, julie_b))
        raw = b.wait_for(julie_b, lambda r: message_from_bytes(r)["Subject"] == "Sans certificat")
        assert message_from_bytes(raw).get_content_type() == "multipart/signed"
        gw.settings = a.settings.replace(allow_tls_only_peers=False)
        with smtplib.SMTP("127.0.0.1", a.port("submission"), timeout=30) as smtp:
            smtp.starttls(context=a.client_context())
            smtp.login(MARIE_A, "Demo-Passw0rd")
            smtp.mail(MARIE_A)
            smtp.rcpt(julie_b)
            code, text = smtp.data(new_message("Refuse", MARIE_A, julie_b))
        assert code == 554 and text.startswith(b"5.7.5") and julie_b.encode() in text
    finally:
        gw.settings = a.settings
        with a.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == julie_b))
            box.smime_cert_pem = saved  # type: ignore[union-attr]
