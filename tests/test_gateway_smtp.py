"""The submission ports end to end: a real gateway (aiosmtpd) on loopback, driven by smtplib and
aiosmtplib, delivering into a real Dovecot read back over IMAP."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import email.utils
import smtplib
import time
import uuid
from email import message_from_bytes
from typing import TYPE_CHECKING

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from gateway.deliver.notify import SmtpNotifier
from gateway.deliver.workers import Workers
from spool.models import DeliveryEvent
from tests.ports import free_port
from trust_space.models import Account, Mailbox, MailboxState

if TYPE_CHECKING:
    from tests.gateway_fixtures import Operator

# Plugins, not imports: pytest must load (and rewrite) them before anything imports them.
pytest_plugins = ["tests.mailstore_fixtures", "tests.gateway_fixtures"]
PASSWORD = "Demo-Passw0rd"  # tests.mailstore_fixtures.PASSWORD

MARIE, PAUL, JULIE = "marie.martin@mss.test", "paul.durand@mss.test", "julie.bernard@mss.test"




def message(subject: str, sender: str = MARIE, to: str = PAUL, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
            f"Message-ID: <{uuid.uuid4().hex}@mss.test>\r\n\r\nBonjour.\r\n").encode()


def subject_is(subject: str):  # type: ignore[no-untyped-def]
    return lambda raw: message_from_bytes(raw)["Subject"] == subject


def starttls(op: Operator, card: str | None = None) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", op.port("submission"), timeout=30)
    smtp.starttls(context=op.client_context(card))
    smtp.ehlo()
    return smtp


# ---------------------------------------------------------------------- happy paths
def test_plain_submission_is_signed_delivered_and_copied_to_sent(operator: Operator) -> None:
    queue_id = operator.submit(MARIE, [PAUL], message("Compte rendu 1"))
    raw = operator.wait_for(PAUL, subject_is("Compte rendu 1"))
    received = message_from_bytes(raw)
    assert received.get_content_type() == "multipart/signed"
    results = received["Authentication-Results"]
    assert results.startswith("mss.test;") and "smime=pass" in results
    assert f"id {queue_id}" in raw.decode()
    assert "MSS-Security" not in raw.decode()
    operator.wait_for(MARIE, subject_is("Compte rendu 1"), folder="Sent")
    with operator.space.db.transaction() as session:
        events = {e.event for e in session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.queue_id == queue_id))}
    assert {"queued", "delivered"} <= events


def test_a_delivery_s_time_is_split_between_the_queue_and_the_attempt(
        operator: Operator) -> None:
    """The operator's Postfix-like ``delays=``: each local delivery's time from acceptance to
    its attempt and the attempt itself, within the acceptance → recorded latency; and the
    claims that took it."""
    value = operator.gateway.metrics.registry.get_sample_value

    def read() -> dict[str, float]:
        found = {f"{part} {stage}": value(f"mss_delivery_stage_seconds_{part}",
                                          {"kind": "local", "stage": stage}) or 0.0
                 for part in ("count", "sum") for stage in ("queue", "attempt")}
        found["latency"] = value("mss_delivery_latency_seconds_sum", {"kind": "local"}) or 0.0
        found["batches"] = value("mss_delivery_record_seconds_count") or 0.0
        found["claims"] = value("mss_delivery_claim_seconds_count", {"found": "yes"}) or 0.0
        found["handed"] = value("mss_delivery_handed_total") or 0.0
        return found

    before = read()
    operator.submit(MARIE, [PAUL], message("Delais"))
    operator.wait_for(PAUL, subject_is("Delais"))
    for _ in range(100):  # counted once the batch is recorded, just after the store has it
        if (after := read())["count attempt"] > before["count attempt"]:
            break
        time.sleep(0.05)
    grew = {k: after[k] - before[k] for k in after}
    assert grew["count queue"] == grew["count attempt"] >= 1
    # a batch recorded was claimed first: from the queue, or at acceptance (handed over)
    assert grew["claims"] + grew["handed"] >= grew["batches"] >= 1
    assert 0 < grew["sum attempt"] and 0 <= grew["sum queue"]
    assert grew["sum queue"] + grew["sum attempt"] <= grew["latency"] + 1e-6


def test_aiosmtplib_on_implicit_tls_port(operator: Operator) -> None:
    from tests.gateway_fixtures import quit_and_wait_closed

    async def send() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=operator.port("submissions"),
                               use_tls=True, tls_context=operator.client_context(), timeout=30)
        await smtp.connect()
        await smtp.login(MARIE, PASSWORD)
        await smtp.sendmail(MARIE, [JULIE], message("Implicite", to=JULIE))
        await quit_and_wait_closed(smtp)

    asyncio.run(send())
    operator.wait_for(JULIE, subject_is("Implicite"))


def test_no_starttls_on_the_implicit_tls_port(operator: Operator) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", operator.port("submissions"),
                          context=operator.client_context(), timeout=10) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250 and not smtp.has_extn("starttls")
        assert smtp.docmd("STARTTLS")[0] == 503  # RFC 3207 §4.2
        smtp.login(MARIE, PASSWORD)  # the session is intact


def test_external_with_card_certificate(operator: Operator) -> None:
    with starttls(operator, card="marie") as smtp:
        code, _ = smtp.docmd("AUTH", "EXTERNAL =")
        assert code == 235
        smtp.sendmail(MARIE, [PAUL], message("Par carte"))
    operator.wait_for(PAUL, subject_is("Par carte"))


def test_external_with_applicative_certificate(operator: Operator) -> None:
    lps = operator.space.address("lps")
    with starttls(operator, card="lps") as smtp:
        assert smtp.docmd("AUTH", "EXTERNAL =")[0] == 235
        smtp.sendmail(lps, [PAUL], message("Logiciel", sender=lps))
    operator.wait_for(PAUL, subject_is("Logiciel"))


def test_webmail_submits_for_a_user_with_authzid(operator: Operator) -> None:
    secret = (operator.settings.data_dir / "webmail.secret").read_text()
    blob = base64.b64encode(f"{MARIE}\0webmail@mss.test\0{secret}".encode()).decode()
    with starttls(operator) as smtp:
        assert smtp.docmd("AUTH", f"PLAIN {blob}")[0] == 235
        smtp.sendmail(MARIE, [PAUL], message("Depuis le webmail"))
        code, text = smtp.mail(PAUL)  # the user's rights, not the webmail's
        assert code == 550 and b"5.7.1" in text
    operator.wait_for(PAUL, subject_is("Depuis le webmail"))


def test_mdn_processed_after_local_delivery(operator: Operator) -> None:
    extra = f"Disposition-Notification-To: {MARIE}\r\n"
    operator.submit(MARIE, [PAUL], message("Avec accuse", extra=extra))
    report = operator.wait_for(MARIE, lambda r: b"disposition-notification" in r)
    assert b"processed" in report and b"Avec accuse" not in report.split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------------- refusals
def test_auth_before_tls_is_refused(operator: Operator) -> None:
    with smtplib.SMTP("127.0.0.1", operator.port("submission"), timeout=30) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        code, text = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(
            f"\0{MARIE}\0{PASSWORD}".encode()).decode())
        assert code in (530, 538) and text.startswith(b"5.7.")
        assert smtp.mail(MARIE)[0] == 530


def test_wrong_password_is_refused_and_counted(operator: Operator) -> None:
    with starttls(operator) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as err:
        smtp.login(JULIE, "Mauvais-Passw0rd")
    assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.8")
    with operator.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == JULIE))
        assert account is not None and account.failed_attempts >= 1
        account.failed_attempts = 0


def test_only_a_service_account_may_use_an_authzid(operator: Operator) -> None:
    blob = base64.b64encode(f"{PAUL}\0{MARIE}\0{PASSWORD}".encode()).decode()
    with starttls(operator) as smtp:
        code, text = smtp.docmd("AUTH", f"PLAIN {blob}")
    assert code == 535 and text.startswith(b"5.7.8")


def test_revoked_client_certificate_is_refused(operator: Operator) -> None:
    with starttls(operator, card="revoked") as smtp:
        code, text = smtp.docmd("AUTH", "EXTERNAL =")
    assert code == 535 and text.startswith(b"5.7.8") and b"revoque" in text


def test_sender_without_rights(operator: Operator) -> None:
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        code, text = smtp.mail(PAUL)
    assert code == 550 and text.startswith(b"5.7.1")


def test_recipient_outside_the_trust_space_refused_at_rcpt(operator: Operator) -> None:
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        assert smtp.mail(MARIE)[0] == 250
        code, text = smtp.rcpt("someone@gmail.example")
        assert code == 550 and text.startswith(b"5.7.1")
        assert b"hors de l'espace de confiance" in text and b"outside the trust space" in text
        assert smtp.rcpt(PAUL)[0] == 250  # the session goes on


def set_state(operator: Operator, address: str, state: MailboxState) -> None:
    with operator.space.db.transaction() as session:
        mailbox = session.scalar(select(Mailbox).where(Mailbox.address == address))
        assert mailbox is not None
        mailbox.state = state


def test_a_recipient_grant_is_remembered_briefly_a_refusal_never(operator: Operator) -> None:
    """MSS_POLICY_CACHE_SECONDS: a granted RCPT is answered from memory for that long; once
    it lapses the directory decides again, and a refusal is never remembered."""
    decisions = operator.gateway.gw.decisions  # type: ignore[union-attr]
    saved = decisions.ttl
    decisions.clear()
    decisions.ttl = 60
    try:
        with starttls(operator) as smtp:
            smtp.login(MARIE, PASSWORD)
            smtp.mail(MARIE)
            assert smtp.rcpt(JULIE)[0] == 250
            set_state(operator, JULIE, MailboxState.SUSPENDED)
            assert smtp.rcpt(JULIE)[0] == 250  # within the delay: from memory
            decisions.clear()  # the delay has passed
            assert smtp.rcpt(JULIE)[0] == 550
            set_state(operator, JULIE, MailboxState.PUBLISHED)
            assert smtp.rcpt(JULIE)[0] == 250  # the refusal was not kept
            decisions.ttl = 0
            decisions.clear()
            set_state(operator, JULIE, MailboxState.SUSPENDED)
            assert smtp.rcpt(JULIE)[0] == 550  # 0: the database every time
    finally:
        set_state(operator, JULIE, MailboxState.PUBLISHED)
        decisions.ttl = saved
        decisions.clear()


def test_oversize_message(operator: Operator) -> None:
    limit = operator.settings.max_message_size
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        assert smtp.has_extn("size")
        code, text = smtp.mail(MARIE, [f"SIZE={limit + 1}"])
        assert code == 552 and text.startswith(b"5.3.4")
        smtp.mail(MARIE)
        smtp.rcpt(PAUL)
        body = (b"y" * 76 + b"\r\n") * (limit // 78 + 10)  # lines of 78 octets (RFC 5322)
        code, text = smtp.data(message("Gros") + body)
        assert code == 552 and text.startswith(b"5.3.4")


def test_data_transparency_and_a_command_pipelined_after_the_dot(operator: Operator) -> None:
    """Lines made of dots survive the relay (RFC 5321 §4.5.2), and a command sent in the same
    packet as the final dot is answered, not swallowed with the body."""
    text = b".\r\n..\r\n.Fin\r\nfin.\r\n"
    stuffed = message("Points") + b"".join(b"." + line + b"\r\n" if line.startswith(b".")
                                           else line + b"\r\n" for line in text.splitlines())
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        smtp.mail(MARIE)
        smtp.rcpt(PAUL)
        assert smtp.docmd("DATA")[0] == 354
        smtp.send(stuffed + b".\r\nNOOP\r\n")
        code, reply = smtp.getreply()
        assert code == 250 and b"queued as" in reply
        assert smtp.getreply()[0] == 250  # the NOOP
    raw = operator.wait_for(PAUL, subject_is("Points"))
    assert b"Bonjour.\r\n" + text in raw


def test_a_line_over_the_limit_is_refused_after_the_dot(operator: Operator) -> None:
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        smtp.mail(MARIE)
        smtp.rcpt(PAUL)
        code, text = smtp.data(message("Longue") + b"x" * 1200 + b"\r\n")
        assert code == 500 and text.startswith(b"5.5.0")
        assert smtp.mail(MARIE)[0] == 250  # the session goes on, the transaction was reset
        code, text = smtp.docmd("DATA")
        assert code == 503 and text.startswith(b"5.5.1")  # no recipient any more
        smtp.rcpt(PAUL)
        code, text = smtp.docmd("DATA", "maintenant")
        assert code == 501 and text.startswith(b"5.5.4")


def test_rate_limit(operator: Operator) -> None:
    rate = operator.gateway.listeners.rate  # type: ignore[union-attr]
    saved, rate.per_minute = rate.per_minute, 1
    try:
        with starttls(operator) as smtp:
            smtp.login(JULIE, PASSWORD)
            smtp.mail(JULIE)
            smtp.rset()
            code, text = smtp.mail(JULIE)
        assert code == 451 and text.startswith(b"4.7.1")
    finally:
        rate.per_minute = saved


def test_loop_detection(operator: Operator) -> None:
    hops = "".join(f"Received: from hop{i} by relay{i}; Mon, 10 Nov 2025 10:00:00 +0100\r\n"
                   for i in range(operator.settings.max_received + 1))
    with starttls(operator) as smtp:
        smtp.login(MARIE, PASSWORD)
        smtp.mail(MARIE)
        smtp.rcpt(PAUL)
        code, text = smtp.data(hops.encode() + message("Boucle"))
    assert code == 554 and text.startswith(b"5.4.6")


# ---------------------------------------------------------------------- after delivery
def test_notification_reaches_the_smarthost_without_subject_or_sender(
        operator: Operator) -> None:
    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            received.append(envelope.original_content)
            return "250 OK"

    sink = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    deliverer = operator.gateway.deliverer
    assert deliverer is not None
    saved = deliverer.notifier
    deliverer.notifier = SmtpNotifier(f"127.0.0.1:{sink.port}")  # the smarthost is down
    failures = operator.gateway.metrics.registry
    try:
        with operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == PAUL))
            box.notify_usual_email = True  # type: ignore[union-attr]
            box.professional.usual_email = "paul@exemple.fr"  # type: ignore[union-attr]
        operator.submit(MARIE, [PAUL], message("Resultats confidentiels"))
        operator.wait_for(PAUL, subject_is("Resultats confidentiels"))  # never blocked
        for _ in range(100):
            if failures.get_sample_value("mss_notify_failures_total"):
                break
            asyncio.run(asyncio.sleep(0.1))
        assert failures.get_sample_value("mss_notify_failures_total"), "échec non compté"
        sink.start()  # the smarthost is back: the notice is retried
        for _ in range(100):
            if received:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert received, "aucun avis reçu"
        notice = received[0]
        assert b"Resultats confidentiels" not in notice
        assert b"marie" not in notice.lower() and b"martin" not in notice.lower()
    finally:
        deliverer.notifier = saved
        sink.stop()
        with operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == PAUL))
            box.notify_usual_email = False  # type: ignore[union-attr]


def test_dsn_when_the_mailbox_disappears_after_acceptance(operator: Operator) -> None:
    gateway = operator.gateway
    assert gateway.workers is not None and gateway.deliverer is not None
    gateway.workers.stop()
    nina = operator.space.address("nina")
    try:
        operator.submit(MARIE, [nina], message("Perdu", to=nina))
        with operator.space.db.transaction() as session:  # deleted between RCPT and delivery
            session.execute(Account.__table__.delete().where(Account.login == nina))
            session.execute(Mailbox.__table__.delete().where(Mailbox.address == nina))
    finally:
        gateway.workers = Workers(gateway.deliverer, 2, owner="test")
        assert gateway.gw is not None
        gateway.gw.dispatch = gateway.workers
        gateway.workers.start()
    dsn = operator.wait_for(MARIE, lambda r: b"delivery-status" in r and nina.encode() in r)
    assert b"Action: failed" in dsn and b"Status: 5." in dsn


def test_a_delivery_in_doubt_after_a_crash_is_not_repeated(operator: Operator) -> None:
    """The worker died after Dovecot took the message and before the commit: the row comes
    back in doubt and the mailbox is searched for its Message-ID before delivering again."""
    from datetime import timedelta

    from core.db import utcnow
    from mailstore.lmtp import LmtpClient
    from spool.models import QueuedMessage, QueueRecipient, RecipientState

    gateway = operator.gateway
    assert gateway.workers is not None and gateway.deliverer is not None
    gateway.workers.stop()
    try:
        queue_id = operator.submit(MARIE, [JULIE], message("Une seule fois", to=JULIE))
        with operator.space.db.transaction() as session:
            raw = session.get(QueuedMessage, queue_id).raw_local  # type: ignore[union-attr]
            for row in session.scalars(select(QueueRecipient)
                                       .where(QueueRecipient.queue_id == queue_id)):
                row.state, row.lease_owner = RecipientState.DELIVERING, "mort"
                row.lease_until = utcnow() - timedelta(seconds=1)
        LmtpClient.for_settings(operator.settings).deliver(raw, MARIE, [JULIE])  # type: ignore[arg-type]
    finally:
        gateway.workers = Workers(gateway.deliverer, 2, owner="test")
        assert gateway.gw is not None
        gateway.gw.dispatch = gateway.workers
        gateway.workers.start()
    operator.wait_for(MARIE, subject_is("Une seule fois"), folder="Sent")
    # The Sent copy is visible over IMAP before the worker commits the batch's outcomes.
    deadline = time.monotonic() + 20
    while True:
        with operator.space.db.transaction() as session:
            events = [e.detail for e in session.scalars(
                select(DeliveryEvent).where(DeliveryEvent.queue_id == queue_id,
                                            DeliveryEvent.event == "delivered"))]
        if len(events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert any("déjà livré" in d for d in events)
    copies = [r for r in operator.messages(JULIE) if b"Une seule fois" in r]
    assert len(copies) == 1


def test_a_submission_without_date_is_dated(operator: Operator) -> None:
    """A practice software that sends no Date field (RFC 5322 §3.6 requires one): the
    submission server adds it (RFC 6409 §8.3), so readers do not show an empty date."""
    raw = message("Sans date")
    assert b"Date:" not in raw
    operator.submit(MARIE, [PAUL], raw)
    got = message_from_bytes(operator.wait_for(PAUL, subject_is("Sans date")))
    assert len(got.get_all("Date")) == 1
    sent = email.utils.parsedate_to_datetime(got["Date"])
    assert abs(time.time() - sent.timestamp()) < 120


def test_without_smarthost_the_notice_lands_in_the_spool(operator: Operator) -> None:
    """Issue #15 item 6: on the embedded default (no MSS_SMARTHOST) every notice failed with
    554 'pas de smarthost'; it now goes where the one-time codes go, DATA_DIR/spool/mail."""
    deliverer = operator.gateway.deliverer
    assert deliverer is not None and type(deliverer.notifier).__name__ == "SpoolNotifier"
    spool = operator.settings.data_dir / "spool" / "mail"
    before = set(spool.glob("*.eml")) if spool.exists() else set()
    try:
        with operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == PAUL))
            box.notify_usual_email = True  # type: ignore[union-attr]
            box.professional.usual_email = "paul@exemple.fr"  # type: ignore[union-attr]
        operator.submit(MARIE, [PAUL], message("Bilan a ne pas divulguer"))
        operator.wait_for(PAUL, subject_is("Bilan a ne pas divulguer"))
        for _ in range(100):
            new = set(spool.glob("*.eml")) - before if spool.exists() else set()
            if new:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert new, "aucun avis dans le spool"
        path = new.pop()
        notice = path.read_bytes()
        assert path.stat().st_mode & 0o777 == 0o600
        parsed = email.message_from_bytes(notice, policy=email.policy.default)
        assert parsed["To"] == "paul@exemple.fr" and parsed["Subject"] == "Nouveau message sécurisé"
        assert b"Bilan" not in notice and b"marie" not in notice.lower()
    finally:
        with operator.space.db.transaction() as session:
            box = session.scalar(select(Mailbox).where(Mailbox.address == PAUL))
            box.notify_usual_email = False  # type: ignore[union-attr]
