"""gateway.deliver.dsn (RFC 3464), gateway.deliver.mdn (RFC 8098) and gateway.deliver.notify: every
report parses with
the ``email`` package, carries exactly its RFC fields and never the original's content; the
notice goes through a real aiosmtpd sink on loopback."""

from __future__ import annotations

import email
import email.message
import email.policy
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from certs.pki import Pki
from core.db import Database
from gateway.deliver import dsn, mdn, notify
from gateway.deliver.dsn import Failure
from gateway.errors import NotifyError

ARRIVAL = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
ORIGINAL = (b"Return-Path: <alice@mss.test>\r\n"
            b"From: Dr Alice Martin <alice@mss.test>\r\n"
            b"To: bob@autre.test, carol@autre.test\r\n"
            b"Subject: =?utf-8?q?R=C3=A9sultats_biopsie_M=2E_Dupont?=\r\n"
            b"Date: Mon, 02 Jun 2025 10:00:00 +0200\r\n"
            b"Message-ID: <orig-1@mss.test>\r\n"
            b"Disposition-Notification-To: Alice <alice@mss.test>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Patient Dupont, carcinome.\r\n")
SECRET_BODY = b"carcinome"


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert not parsed.defects
    return parsed


def blocks(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a message/delivery-status or disposition-notification part."""
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [block for block in payload if isinstance(block, email.message.Message)]


def _dsn(**changes: Any) -> bytes:
    arguments: dict[str, Any] = dict(
        original=ORIGINAL, envelope_from="alice@mss.test", reporting_mta="relay.mss.test",
        queue_id="Q42", arrival=ARRIVAL, from_domain="mss.test",
        failures=[Failure("bob@autre.test", "5.1.1", "550 5.1.1 <bob@autre.test> inconnu",
                          remote_mta="relay.autre.test")])
    arguments.update(changes)
    return dsn.build_dsn(**arguments)


# ---------------------------------------------------------------------- DSN
def test_dsn_structure_and_fields() -> None:
    raw = _dsn()
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"] == "MAILER-DAEMON@mss.test" and report["To"] == "alice@mss.test"
    assert report["Subject"] == "Échec de remise / Delivery failure"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["In-Reply-To"] == report["References"] == "<orig-1@mss.test>"
    human, status, headers = report.iter_parts()
    assert human.get_content_type() == "text/plain"
    text = human.get_content()
    assert "n'a pas pu être remis" in text and "could not be delivered" in text
    assert "bob@autre.test" in text and "Q42" in text
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = blocks(status)
    assert per_message.items() == [("Reporting-MTA", "dns; relay.mss.test"),
                                   ("Arrival-Date", "Mon, 02 Jun 2025 08:00:00 +0000")]
    assert per_recipient.items() == [
        ("Final-Recipient", "rfc822; bob@autre.test"), ("Action", "failed"),
        ("Status", "5.1.1"), ("Remote-MTA", "dns; relay.autre.test"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 <bob@autre.test> inconnu")]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert raw.isascii()


def test_dsn_never_returns_the_body() -> None:
    raw = _dsn()
    assert SECRET_BODY not in raw
    human = next(parse(raw).iter_parts()).get_content()
    assert "biopsie" not in human and "Dupont" not in human  # nor the subject in the text
    assert b"Message-ID: <orig-1@mss.test>\r\n" in raw  # the header section is there
    assert len(list(parse(_dsn(return_content="none")).iter_parts())) == 2
    with pytest.raises(ValueError, match="jamais le corps"):
        _dsn(return_content="full")


def test_dsn_delayed_and_mixed() -> None:
    delayed = Failure("carol@autre.test", "4.4.1", "connexion refusee", action="delayed")
    report = parse(_dsn(failures=[delayed]))
    assert report["Subject"] == "Remise retardée / Delivery delayed"
    status = blocks(next(p for p in report.iter_parts()
                         if p.get_content_type() == "message/delivery-status"))
    assert [b["Action"] for b in status[1:]] == ["delayed"]
    assert "Remote-MTA" not in status[1]
    mixed = parse(_dsn(failures=[Failure("bob@autre.test", "5.1.1", ""), delayed]))
    assert mixed["Subject"] == "Échec de remise / Delivery failure"
    status = blocks(list(mixed.iter_parts())[1])
    assert "Diagnostic-Code" not in status[1] and status[2]["Status"] == "4.4.1"


def test_dsn_sanitises_the_remote_reply() -> None:
    nasty = Failure("bob@autre.test", "5.7.1",
                    "550 5.7.1 refusé\r\nFinal-Recipient: rfc822; evil@x.y\r\n" + "x" * 900)
    status = blocks(list(parse(_dsn(failures=[nasty])).iter_parts())[1])
    assert len(status) == 2 and "evil" not in status[1]["Final-Recipient"]
    diagnostic = status[1]["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 5.7.1 refuse Final-Recipient")
    assert len(diagnostic) <= len("smtp; ") + dsn.MAX_DIAGNOSTIC


def test_dsn_utf8_recipient_uses_the_global_type() -> None:
    report = parse(_dsn(failures=[Failure("zoé@autre.test", "5.1.1", "inconnu")]))
    status = list(report.iter_parts())[1]
    assert status.get_content_type() == "message/global-delivery-status"


@pytest.mark.parametrize("changes", [
    {"failures": []}, {"envelope_from": ""}, {"envelope_from": "a@b.c\r\nBcc: x@y.z"},
    {"envelope_from": "alice@mss.test\n"}, {"reporting_mta": "relay.mss.test\n"},
    {"failures": [Failure("b@autre.test", "4.1.1", "x")]},  # failed with a 4.x.x status
    {"failures": [Failure("b@autre.test", "5.1.1", "x", action="delayed")]},
    {"failures": [Failure("b@autre.test", "5.1", "x")]},
    {"failures": [Failure("b@autre.test", "5.1.1", "x", action="bounced")]},
    {"reporting_mta": "relay mss"}, {"from_domain": "mss.test\r\nBcc: eve@x.y"},
])
def test_dsn_refuses_what_rfc_3464_does_not_allow(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _dsn(**changes)


# ---------------------------------------------------------------------- MDN requests
def _with(*fields: bytes, base: bytes = ORIGINAL) -> bytes:
    stripped = b"".join(line for line in base.splitlines(keepends=True)
                        if not line.startswith((b"Disposition-Notification", b"Return-Path")))
    return b"".join(fields) + stripped


def test_mdn_request_well_formed() -> None:
    assert mdn.mdn_request(ORIGINAL) == "alice@mss.test"
    assert mdn.mdn_request(ORIGINAL.replace(b"\r\n", b"\n")) == "alice@mss.test"
    no_path = _with(b"Disposition-Notification-To: alice@mss.test\r\n")
    assert mdn.mdn_request(no_path) == "alice@mss.test"
    assert mdn.mdn_request(no_path, return_path="ALICE@mss.test") == "alice@mss.test"
    assert mdn.mdn_request(_with()) is None


@pytest.mark.parametrize("fields", [
    [b"Disposition-Notification-To: alice@mss.test, bob@mss.test\r\n"],
    [b"Disposition-Notification-To: alice@mss.test\r\n",
     b"Disposition-Notification-To: alice@mss.test\r\n"],
    [b"Disposition-Notification-To: pas une adresse\r\n"],
    [b"Disposition-Notification-To: \r\n"],
    [b"Disposition-Notification-To: <alice@mss.test\r\n"],
    [b"Disposition-Notification-To: alice@mss.test\r\n", b"Return-Path: <eve@autre.test>\r\n"],
    [b"Disposition-Notification-To: alice@mss.test\r\n", b"Return-Path: <>\r\n"],
    [b"Disposition-Notification-To: alice@mss.test\r\n",
     b"Disposition-Notification-Options: x-unknown=required,yes\r\n"],
])
def test_mdn_request_ignores_malformed_or_mismatched(fields: list[bytes]) -> None:
    assert mdn.mdn_request(_with(*fields)) is None


def test_mdn_request_return_path_argument_wins() -> None:
    raw = _with(b"Disposition-Notification-To: alice@mss.test\r\n")
    assert mdn.mdn_request(raw, return_path="eve@autre.test") is None
    assert mdn.mdn_request(raw, return_path="") is None  # null sender: no MDN
    optional = _with(b"Disposition-Notification-To: alice@mss.test\r\n",
                     b"Disposition-Notification-Options: x-unknown=optional,yes\r\n")
    assert mdn.mdn_request(optional) == "alice@mss.test"


def test_wants_final_delivery() -> None:
    direct = (b"Disposition-Notification-Options: "
              b"X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n")
    assert mdn.wants_final_delivery(_with(direct))
    assert mdn.wants_final_delivery(_with(direct.lower().replace(b"optional", b"required")))
    assert mdn.mdn_request(_with(b"Disposition-Notification-To: alice@mss.test\r\n",
                                 direct.replace(b"optional", b"required"))) == "alice@mss.test"
    assert not mdn.wants_final_delivery(_with(direct.replace(b"true", b"false")))
    assert not mdn.wants_final_delivery(_with(direct.replace(b"=optional,true", b"")))
    assert not mdn.wants_final_delivery(ORIGINAL)


def test_no_mdn_for_reports() -> None:
    request = b"Disposition-Notification-To: alice@mss.test\r\n"
    report = _dsn()
    assert mdn.is_report(report) and not mdn.is_report(ORIGINAL)
    assert mdn.mdn_request(request + report) is None
    receipt = mdn.build_mdn(original=ORIGINAL, final_recipient="bob@autre.test",
                            reporting_ua="autre.test; mss", from_addr="bob@autre.test")
    assert mdn.is_report(receipt)
    assert mdn.mdn_request(request + receipt) is None
    assert mdn.mdn_request(_with(request, base=b"Content-Type: message/delivery-status\r\n\r\n"
                                                b"x\r\n")) is None


# ---------------------------------------------------------------------- MDN
def test_build_mdn() -> None:
    raw = mdn.build_mdn(original=ORIGINAL, final_recipient="bob@autre.test",
                        reporting_ua="autre.test; mss 0.1", from_addr="bob@autre.test",
                        original_recipient="bob@autre.test",
                        now=datetime(2025, 6, 2, 9, 0, tzinfo=UTC))
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "disposition-notification"
    assert (report["From"], report["To"]) == ("bob@autre.test", "alice@mss.test")
    assert report["Date"] == "Mon, 02 Jun 2025 09:00:00 +0000"
    assert report["Auto-Submitted"] == "auto-replied"
    human, notification, headers = report.iter_parts()
    assert "traité par le serveur" in human.get_content()
    assert "biopsie" not in human.get_content()
    assert notification.get_content_type() == "message/disposition-notification"
    fields = blocks(notification)[0].items()
    assert fields == [("Reporting-UA", "autre.test; mss 0.1"),
                      ("Original-Recipient", "rfc822; bob@autre.test"),
                      ("Final-Recipient", "rfc822; bob@autre.test"),
                      ("Original-Message-ID", "<orig-1@mss.test>"),
                      ("Disposition", "automatic-action/MDN-sent-automatically; processed")]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert SECRET_BODY not in raw and raw.isascii()


def test_build_mdn_direct_dispatched_without_headers() -> None:
    raw = mdn.build_mdn(original=ORIGINAL, final_recipient="bob@autre.test",
                        reporting_ua="autre.test", from_addr="bob@autre.test",
                        disposition=mdn.DISPATCHED, final_delivery=True, include_headers=False)
    human, notification = parse(raw).iter_parts()
    assert "remis dans la boîte aux lettres" in human.get_content()
    block = blocks(notification)[0]
    assert block["Disposition"] == "automatic-action/MDN-sent-automatically; dispatched"
    assert "X-DIRECT-FINAL-DESTINATION-DELIVERY" in block
    assert b"Subject:" not in raw.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("changes", [
    {"original": _with()}, {"disposition": "processed"}, {"reporting_ua": "a\r\nb"},
    {"disposition": "automatic-action/MDN-sent-automatically; read"},
    {"from_addr": "bob@autre.test\r\nBcc: eve@x.y"}, {"reporting_ua": "autre.test\n"},
    {"disposition": mdn.PROCESSED + "\n"},
])
def test_build_mdn_refusals(changes: dict[str, Any]) -> None:
    arguments: dict[str, Any] = dict(original=ORIGINAL, final_recipient="bob@autre.test",
                                     reporting_ua="autre.test", from_addr="bob@autre.test")
    with pytest.raises(ValueError):
        mdn.build_mdn(**{**arguments, **changes})


# ---------------------------------------------------------------------- notice
URL = "https://webmail.mss.test:8443/"


def test_notice_has_nothing_of_the_message() -> None:
    raw = notify.build_notice(to="bob.perso@gmail.com", from_addr="ne-pas-repondre@mss.test",
                              webmail_url=URL, message_date=ARRIVAL)
    notice = parse(raw)
    assert notice["Subject"] == "Nouveau message sécurisé"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["To"] == "bob.perso@gmail.com"
    assert notice["From"].addresses[0].addr_spec == "ne-pas-repondre@mss.test"
    text = notice.get_content()
    assert "Vous avez reçu un nouveau message dans votre messagerie sécurisée de santé" in text
    assert "le 02/06/2025 à 10:00" in text and URL in text and "new message" in text
    assert parse(ORIGINAL)["Subject"] == "Résultats biopsie M. Dupont"  # must not leak
    for secret in ("Résultats", "biopsie", "Dupont", "alice", "Martin", "bob@autre.test",
                   "orig-1", "carcinome"):
        assert secret.lower() not in (text + raw.decode()).lower(), secret


@pytest.mark.parametrize("changes", [
    {"to": "x@y.z\r\nBcc: eve@x.y"}, {"to": "pas une adresse"}, {"to": "x@y.z\n"},
    {"webmail_url": "javascript:alert(1)"}, {"webmail_url": "https://a b"},
])
def test_notice_refuses_injection(changes: dict[str, str]) -> None:
    arguments: dict[str, Any] = dict(to="x@y.z", from_addr="no-reply@mss.test",
                                     webmail_url=URL)
    with pytest.raises(ValueError):
        notify.build_notice(**{**arguments, **changes})


# ---------------------------------------------------------------------- SmtpNotifier
@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it receives."""

    refuse: bool = False
    received: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.refuse:
            return "550 5.1.1 Utilisateur inconnu"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler, port = Sink(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path, Path]:
    work = tmp_path_factory.mktemp("notify_tls")
    pki = Pki.create(work / "pki", "Test", "mss.test")
    database = Database(f"sqlite:///{work}/x.db")
    database.create_all()
    with database.transaction() as session:
        server = pki.issue_server(session, ["localhost"], ["127.0.0.1"])
    database.dispose()
    (work / "server.pem").write_bytes(server.cert_pem())
    (work / "server.key").write_bytes(server.key_pem())
    return pki, work / "server.pem", work / "server.key"


def _notice() -> bytes:
    return notify.build_notice(to="jean@example.org", from_addr="ne-pas-repondre@mss.test",
                               webmail_url=URL)


def test_smtp_notifier_delivers_to_a_real_sink(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    message = _notice()
    notify.SmtpNotifier(f"127.0.0.1:{port}").send("jean@example.org", message)
    (envelope,) = handler.received
    assert envelope.mail_from == "<>" and envelope.rcpt_tos == ["jean@example.org"]
    assert isinstance(envelope.content, bytes)
    assert envelope.content.replace(b"\r\n", b"\n") == message.replace(b"\r\n", b"\n")
    assert b"biopsie" not in envelope.content and b"alice" not in envelope.content


def test_smtp_notifier_uses_starttls_when_offered(tls_pki: tuple[Pki, Path, Path]) -> None:
    pki, cert, key = tls_pki
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    handler, port = Sink(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            tls_context=server_context, require_starttls=True)
    controller.start()
    try:
        client_context = ssl.create_default_context(cafile=str(pki.ca_pem_path))
        notifier = notify.SmtpNotifier(f"127.0.0.1:{port}", envelope_from="bounce@mss.test",
                                       ssl_context=client_context, require_tls=True)
        notifier.send("jean@example.org", _notice())
        with pytest.raises(NotifyError, match="SSLCertVerificationError"):
            notify.SmtpNotifier(f"127.0.0.1:{port}").send("jean@example.org", _notice())
    finally:
        controller.stop()
    (envelope,) = handler.received
    assert envelope.mail_from == "bounce@mss.test"


def test_smtp_notifier_failures_raise_notify_error(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    with pytest.raises(NotifyError, match="STARTTLS"):
        notify.SmtpNotifier(f"127.0.0.1:{port}", require_tls=True).send("j@example.org",
                                                                        _notice())
    handler.refuse = True
    with pytest.raises(NotifyError, match="SMTPRecipientsRefused 550") as refused:
        notify.SmtpNotifier(f"127.0.0.1:{port}").send("j@example.org", _notice())
    assert not refused.value.permanent  # the caller retries and counts
    with pytest.raises(NotifyError, match=r"127\.0\.0\.1:\d+ \(ConnectionRefusedError\)"):
        notify.SmtpNotifier(f"127.0.0.1:{_free_port()}", timeout=2).send("j@example.org",
                                                                         _notice())
    with pytest.raises(NotifyError, match="invalide"):
        notify.SmtpNotifier(f"127.0.0.1:{port}").send("j@example.org>\r\nDATA", _notice())
    assert handler.received == []
    with pytest.raises(ValueError):
        notify.SmtpNotifier("smarthost-sans-port")
    notifier: notify.Notifier = notify.SmtpNotifier("[::1]:25")  # satisfies the protocol
    assert (notifier.host, notifier.port) == ("::1", 25)  # type: ignore[attr-defined]
