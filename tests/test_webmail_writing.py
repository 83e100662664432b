"""Writing in the webmail (#17) through Flask's test client, on a real Dovecot and gateway:
undo send (held, cancelled back into the form with everything, let go and delivered once,
double click, two processes racing, a lease taken back after a crash, a refusal after the
delay back in Brouillons), autosave (one draft per page, the send removes it), signatures and
« De » (a forged sender refused, nothing lost), « Mise en forme » (sanitised HTML with its text
alternative), Mon compte « Rédaction », and what a hostile client would post."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.audit import AuditRecord
from core.db import utcnow
from tests.gateway_fixtures import Operator
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, compose, csrf, post_form, text
from webmail.mail import outbox as ob
from webmail.mail.undo import outbox_of
from webmail.models import HeldMessage, MailSignature, WritingPreference

pytest_plugins = ["tests.webmail_mail_fixtures"]
PDF = (b"%PDF-1.4 compte rendu", "compte-rendu.pdf", "application/pdf")
PAUL = "paul.durand@mss.test"


@pytest.fixture(scope="module")
def boxes(mail_web: Web) -> dict[str, int]:
    return {who: box_id(mail_web, address(who)) for who in ("marie", "paul", "julie", "org")}


@pytest.fixture(autouse=True)
def fresh_preferences(mail_web: Web) -> Iterator[None]:
    """Each test chooses its delay and signatures; the module's default is 0 (at once)."""
    yield
    with mail_web.space.db.transaction() as session:
        for model in (WritingPreference, MailSignature):
            session.query(model).delete()


def _delay(client: FlaskClient, seconds: int, signatures: dict[int, str] | None = None) -> Any:
    data: dict[str, Any] = {"undo": str(seconds)}
    data.update({f"signature-{k}": v for k, v in (signatures or {}).items()})
    return post_form(client, "/compte/redaction", data)


def _page(client: FlaskClient, box: int, query: str = "") -> str:
    return text(client.get(f"/courrier/{box}/ecrire{query}"))


def _field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page) or \
        re.search(rf'id="{name}" name="{name}"[^>]*value="([^"]*)"', page)
    assert found, name
    return found.group(1)


def _subjects(op: Operator, who: str, folder: str = "INBOX") -> list[str]:
    return [str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
            for raw in op.messages(address(who), folder)]


def _row(web: Web, **where: Any) -> HeldMessage:
    with web.space.db.read() as session:
        query = select(HeldMessage)
        for key, value in where.items():
            query = query.where(getattr(HeldMessage, key) == value)
        row = session.scalars(query.order_by(HeldMessage.id.desc())).first()
        assert row is not None
        session.expunge(row)
        return row


def _audits(web: Web, action: str, since: int) -> list[AuditRecord]:
    with web.space.db.read() as session:
        rows = list(session.scalars(select(AuditRecord).where(
            AuditRecord.action == action, AuditRecord.id > since)))
        for row in rows:
            session.expunge(row)
        return rows


def _last_audit(web: Web) -> int:
    with web.space.db.read() as session:
        return int(session.scalar(select(AuditRecord.id).order_by(AuditRecord.id.desc())
                                  .limit(1)) or 0)


def _due_now(web: Web, held_id: int) -> None:
    """Time passes: the held message is due (instead of sleeping through its delay)."""
    with web.space.db.transaction() as session:
        session.execute(update(HeldMessage).where(HeldMessage.id == held_id)
                        .values(due_at=utcnow() - timedelta(seconds=1)))


def _arrived(op: Operator, who: str, subject: str, count: int = 1, wait: float = 20) -> None:
    deadline = time.monotonic() + wait
    while _subjects(op, who).count(subject) < count:
        assert time.monotonic() < deadline, f"{subject} n'est pas arrivé"
        time.sleep(0.2)
    time.sleep(1.0)  # and nothing more arrives
    assert _subjects(op, who).count(subject) == count


# ---------------------------------------------------------------------- Mon compte
def test_writing_preferences_page(mail_web: Web, boxes: dict[str, int],
                                  as_user: Callable[[str], FlaskClient]) -> None:
    paul = as_user("paul")
    page = text(paul.get("/compte/redaction"))
    assert "Délai pour annuler un envoi" in page and 'aria-current="page">Rédaction' in page
    assert f'name="signature-{boxes["paul"]}"' in page and f'name="signature-{boxes["org"]}"' \
        in page and f'name="signature-{boxes["marie"]}"' not in page
    before = _last_audit(mail_web)
    long = "x" * 1001
    refused = _delay(paul, 20, {boxes["paul"]: "Dr Paul Durand", boxes["org"]: long})
    assert refused.status_code == 400
    assert "La signature dépasse 1000 caractères" in text(refused)
    assert "Dr Paul Durand" in text(refused)  # what was typed is shown again
    many = "\n".join(f"ligne {i}" for i in range(13))
    assert "dépasse 12 lignes" in text(_delay(paul, 20, {boxes["org"]: many}))
    with mail_web.space.db.read() as session:
        assert not session.scalars(select(MailSignature)).all()  # nothing saved
    saved = _delay(paul, 20, {boxes["paul"]: "-- \nDr Paul Durand\r\nMédecin\x07",
                              boxes["org"]: "Pharmacie du Centre", boxes["marie"]: "Intrus"})
    assert saved.status_code == 302
    with mail_web.space.db.read() as session:
        texts = {s.mailbox_id: s.text for s in session.scalars(select(MailSignature))}
    assert texts == {boxes["paul"]: "Dr Paul Durand\nMédecin",
                     boxes["org"]: "Pharmacie du Centre"}  # not Marie's box: not his
    again = text(paul.get("/compte/redaction"))
    assert '<option selected value="20">' in again or 'value="20" selected' in again
    record = _audits(mail_web, "account.writing", before)[-1]
    assert "Dr Paul" not in record.request and "signature:pharma.ducentre" in record.request
    assert paul.post("/compte/redaction", data={"undo": "5"}).status_code == 400  # no CSRF
    odd = _delay(paul, 7)  # not a choice
    assert odd.status_code == 400 and "Choisissez l’un des délais proposés." in text(odd)


# ---------------------------------------------------------------------- undo send
def test_undo_within_the_delay_brings_everything_back(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 10)
    compose_id = _field(_page(marie, box), "compose_id")
    before = _last_audit(mail_web)
    sent = compose(marie, box, [PDF], to=PAUL, cc="julie.bernard@mss.test",
                   subject="Compte rendu à annuler", body="Bonjour,\nci-joint le compte rendu.",
                   encrypt="y", receipt="y", compose_id=compose_id)
    assert sent.status_code == 302 and f"/courrier/{box}?dossier=INBOX" in sent.headers["Location"]
    inbox = text(marie.get(sent.headers["Location"]))
    assert "Message en cours d’envoi…" in inbox and ">Annuler</button>" in inbox
    assert '<noscript><meta http-equiv="refresh" content="1' in inbox  # 10 + 2 s, no script
    row = _row(mail_web, compose_id=compose_id)
    assert row.state == ob.HELD and 9 <= (row.due_at - utcnow()).total_seconds() <= 10
    assert outbox_of(mail_web.app).run_due() == 0  # not due yet
    cancelled = post_form(marie, f"/courrier/envoi/{row.id}/annuler", {})
    assert cancelled.status_code == 302 and "brouillon=" in cancelled.headers["Location"]
    back = text(marie.get(cancelled.headers["Location"]))
    assert "Envoi annulé" in back
    assert f'value="{PAUL}"' in back and 'value="julie.bernard@mss.test"' in back
    assert 'value="Compte rendu à annuler"' in back and "ci-joint le compte rendu." in back
    assert re.search(r'name="keep" value="\d+" checked', back) and "compte-rendu.pdf" in back
    assert 'id="encrypt" name="encrypt" value="y" checked' in back
    assert re.search(r'<input checked id="receipt"', back)
    assert _row(mail_web, id=row.id).state == ob.CANCELLED
    _due_now(mail_web, row.id)
    assert outbox_of(mail_web.app).run_due() == 0
    time.sleep(1.5)
    assert "Compte rendu à annuler" not in _subjects(mail_operator, "paul")
    assert _subjects(mail_operator, "marie", "Drafts").count("Compte rendu à annuler") == 1
    assert _row(mail_web, id=row.id).raw == b""  # the database no longer holds it
    held, done = _audits(mail_web, "mail.send.held", before), \
        _audits(mail_web, "mail.send.cancelled", before)
    assert len(held) == len(done) == 1 and "Compte rendu" not in held[0].request
    late = post_form(marie, f"/courrier/envoi/{row.id}/annuler", {})
    assert "déjà annulé" in text(marie.get(late.headers["Location"]))


def test_let_go_it_is_delivered_once_even_when_clicked_twice_and_raced(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 5)
    page = _page(marie, box)
    fields = {"to": PAUL, "subject": "Résultat parti une fois", "body": "Texte.",
              "compose_id": _field(page, "compose_id")}
    first, second = compose(marie, box, **fields), compose(marie, box, **fields)
    assert first.status_code == second.status_code == 302
    with mail_web.space.db.read() as session:
        ids = list(session.scalars(select(HeldMessage.id).where(
            HeldMessage.compose_id == fields["compose_id"])))
    assert len(ids) == 1
    _due_now(mail_web, ids[0])
    # Two webmail processes (two outboxes, each its own lease owner) and a third thread.
    outboxes = [outbox_of(mail_web.app), ob.Outbox(mail_web.space.db,
                                                    outbox_of(mail_web.app).submitter,
                                                    outbox_of(mail_web.app).imap)]
    handled: list[int] = []
    threads = [threading.Thread(target=lambda o=o: handled.append(o.run_due()))
               for o in outboxes + outboxes[:1]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(handled) == 1
    _arrived(mail_operator, "paul", "Résultat parti une fois")
    row = _row(mail_web, id=ids[0])
    assert row.state == ob.SENT and row.queue_id and row.raw == b""
    inbox = text(marie.get(f"/courrier/{box}"))
    assert "Message envoyé à 1 destinataire." in inbox
    assert "Message envoyé à 1 destinataire." not in text(marie.get(f"/courrier/{box}"))  # once
    status = json.loads(marie.get(f"/courrier/envoi/{row.id}").data)
    assert status["state"] == "sent"
    late = post_form(marie, f"/courrier/envoi/{row.id}/annuler", {})
    assert "Trop tard : le message est déjà parti." in text(marie.get(late.headers["Location"]))


def test_held_messages_leave_when_a_webmail_starts_again(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    """No webmail ran while it fell due: the next one to start sends it, at once."""
    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 30)
    assert compose(marie, box, to=PAUL, subject="Parti au redémarrage",
                   body="Texte.").status_code == 302
    row = _row(mail_web, state=ob.HELD)
    _due_now(mail_web, row.id)
    started = ob.Outbox(mail_web.space.db, outbox_of(mail_web.app).submitter,
                        outbox_of(mail_web.app).imap)
    started.start()
    try:
        _arrived(mail_operator, "paul", "Parti au redémarrage")
    finally:
        started.stop()
    assert _row(mail_web, id=row.id).state == ob.SENT


def test_a_lease_taken_back_after_a_crash_does_not_send_twice(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 5)
    assert compose(marie, box, to=PAUL, subject="Remis avant la panne",
                   body="Texte.").status_code == 302
    row = _row(mail_web, state=ob.HELD)
    _due_now(mail_web, row.id)
    crashed = ob.Outbox(mail_web.space.db, outbox_of(mail_web.app).submitter,
                        outbox_of(mail_web.app).imap, owner="mort:1:0")
    assert crashed._claim(row.id, was_sending=False)
    taken = _row(mail_web, id=row.id)
    crashed.submitter().send(taken.login, taken.sender, [PAUL], taken.raw)  # then it died
    _arrived(mail_operator, "paul", "Remis avant la panne")
    mail_operator.wait_for(address("marie"), lambda r: b"Remis avant la panne" in r, "Sent")
    with mail_web.space.db.transaction() as session:  # its lease runs out
        session.execute(update(HeldMessage).where(HeldMessage.id == row.id).values(
            lease_until=utcnow() - timedelta(seconds=1)))
    before = _last_audit(mail_web)
    assert outbox_of(mail_web.app).run_due() == 1
    assert _row(mail_web, id=row.id).state == ob.SENT
    assert [a.outcome for a in _audits(mail_web, "mail.send", before)] == ["duplicate"]
    time.sleep(1.5)
    assert _subjects(mail_operator, "paul").count("Remis avant la panne") == 1


def test_a_refusal_after_the_delay_goes_back_to_drafts(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 5)
    big = ("x" * 76 + "\n") * 4000  # the gateway's size limit, past what the form checks
    assert compose(marie, box, [(b"y" * 200_000, "scan.pdf", "application/pdf")], to=PAUL,
                   subject="Refusé après le délai", body=big).status_code == 302
    row = _row(mail_web, state=ob.HELD)
    _due_now(mail_web, row.id)
    assert outbox_of(mail_web.app).run_due() == 1
    failed = _row(mail_web, id=row.id)
    assert failed.state == ob.FAILED and failed.draft_uid and failed.raw == b""
    assert "le message est trop volumineux" in failed.outcome
    assert "Refusé après le délai" in _subjects(mail_operator, "marie", "Drafts")
    inbox = text(marie.get(f"/courrier/{box}"))
    assert "Un message n’est pas parti" in inbox and "Ouvrir le brouillon" in inbox
    assert "Un message n’est pas parti" not in text(marie.get(f"/courrier/{box}"))


def test_a_gateway_away_is_tried_again(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    """Nobody answers on the submission port when it falls due: held again, said on the
    banner, and sent once the gateway answers."""
    from tests.mailstore_fixtures import free_port
    from webmail.mail.submit import Submitter

    marie, box = as_user("marie"), boxes["marie"]
    _delay(marie, 5)
    assert compose(marie, box, to=PAUL, subject="Passerelle absente",
                   body="Texte.").status_code == 302
    row = _row(mail_web, state=ob.HELD)
    _due_now(mail_web, row.id)
    real = outbox_of(mail_web.app)
    away = ob.Outbox(mail_web.space.db,
                     lambda: Submitter(**{**real.submitter().__dict__, "port": free_port(),
                                          "timeout": 5.0}), real.imap)
    before = _last_audit(mail_web)
    assert away.run_due() == 1
    again = _row(mail_web, id=row.id)
    assert again.state == ob.HELD and again.attempts == 1 and again.raw
    assert 4 <= (again.due_at - utcnow()).total_seconds() <= 5
    assert [a.outcome for a in _audits(mail_web, "mail.send", before)] == ["deferred"]
    status = json.loads(marie.get(f"/courrier/envoi/{row.id}").data)
    assert status["state"] == "held" and status["retry"] is True
    assert "nouvel essai dans" in text(marie.get(f"/courrier/{box}"))
    _due_now(mail_web, row.id)
    assert real.run_due() == 1
    _arrived(mail_operator, "paul", "Passerelle absente")
    assert _row(mail_web, id=row.id).attempts == 2


# ---------------------------------------------------------------------- autosave
def test_autosave_keeps_one_draft_per_page_and_the_send_removes_it(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, box = as_user("marie"), boxes["marie"]
    page = _page(marie, box)
    assert 'data-autosave="1"' in page
    compose_id = _field(page, "compose_id")
    base = {"to": PAUL, "subject": "Brouillon automatique", "compose_id": compose_id,
            "encrypt": "y"}
    first = compose(marie, box, [PDF], action="autosave", body="Premier jet.", **base)
    assert first.status_code == 200, text(first)
    saved = first.get_json()
    assert re.fullmatch(r"\d\d:\d\d", saved["saved_at"]) and saved["source_folder"] == "Drafts"
    assert [a["filename"] for a in saved["attachments"]] == ["compte-rendu.pdf"]
    keep = str(saved["attachments"][0]["index"])
    second = compose(marie, box, action="autosave", body="Deuxième jet.", keep=keep,
                     draft_uid=str(saved["draft_uid"]), source_folder="Drafts",
                     source_uid=str(saved["draft_uid"]), **base).get_json()
    # A page that lost track of its draft (a save sent while leaving) still leaves one.
    third = compose(marie, box, action="autosave", body="Troisième jet.", keep=keep,
                    source_folder="Drafts", source_uid=str(second["draft_uid"]),
                    **base).get_json()
    drafts = [r for r in mail_operator.messages(address("marie"), "Drafts")
              if b"Brouillon automatique" in r]
    assert len(drafts) == 1
    draft = email.message_from_bytes(drafts[0], policy=email.policy.default)
    assert "Troisième jet." in draft.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert [p.get_filename() for p in draft.iter_attachments()] == ["compte-rendu.pdf"]
    assert draft["X-Compose-Session"] == compose_id and "encrypt" in draft["MSS-Security"]
    reopened = _page(marie, box, f"?brouillon={third['draft_uid']}&dossier=Drafts")
    assert "Troisième jet." in reopened and "compte-rendu.pdf" in reopened
    sent = compose(marie, box, body="Version envoyée.", keep=str(third["attachments"][0]["index"]),
                   draft_uid=str(third["draft_uid"]), source_folder="Drafts",
                   source_uid=str(third["draft_uid"]), **base)
    assert sent.status_code == 302, text(sent)
    _arrived(mail_operator, "paul", "Brouillon automatique")
    assert "Brouillon automatique" not in _subjects(mail_operator, "marie", "Drafts")
    too_big = compose(marie, box, [(b"z" * 300_000, "gros.pdf", "application/pdf")],
                      action="autosave", body="x", **{**base, "compose_id": "A" * 20})
    assert too_big.status_code == 422 and "dépassent" in too_big.get_json()["error"]


def test_autosave_needs_the_right_to_replace_a_draft(
        boxes: dict[str, int], as_user: Callable[[str], FlaskClient]) -> None:
    julie = as_user("julie")  # "Utilisateur" of the organisational box: no deleting
    page = _page(julie, boxes["org"])
    assert "data-autosave" not in page
    refused = compose(julie, boxes["org"], action="autosave", to=PAUL, subject="s", body="b")
    assert refused.status_code == 403
    assert "enregistrement automatique" in refused.get_json()["error"]


# ---------------------------------------------------------------------- De, signatures
def test_sender_choice_and_forged_sender(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    paul, marie = as_user("paul"), as_user("marie")
    page = _page(paul, boxes["paul"])
    options = re.findall(r'<option value="(\d+)"[^>]*>([^<]*)&lt;([^&]+)&gt;', page)
    assert [(int(i), a) for i, _, a in options] == [
        (boxes["paul"], PAUL), (boxes["org"], "pharma.ducentre.64000@mss.test")]
    assert re.search(rf'<option value="{boxes["paul"]}"[^>]* selected', page)
    org_page = _page(paul, boxes["org"])  # default: the mailbox being viewed
    assert re.search(rf'<option value="{boxes["org"]}"[^>]* selected', org_page)
    assert 'id="from_box"' not in _page(marie, boxes["marie"])  # one mailbox: no choice
    as_org = compose(paul, boxes["paul"], to="marie.martin@mss.test", subject="Depuis la pharmacie",
                     body="Texte.", from_box=str(boxes["org"]))
    assert as_org.status_code == 302, text(as_org)
    raw = mail_operator.wait_for(address("marie"), lambda r: b"Depuis la pharmacie" in r)
    assert "pharma.ducentre.64000@mss.test" in str(
        email.message_from_bytes(raw, policy=email.policy.default)["From"])
    before = _last_audit(mail_web)
    for forged in (str(boxes["paul"]), "abc", "99999", str(boxes["org"]) + " "):
        answer = compose(marie, boxes["marie"], [PDF], to=PAUL, subject="Usurpation",
                         body="Texte conservé.", from_box=forged)
        page = text(answer)
        assert answer.status_code == 422  # Paul's box, nonsense, unknown, no delegation
        assert "Vous ne pouvez pas envoyer depuis l’adresse choisie" in page
        assert 'value="Usurpation"' in page and "Texte conservé." in page
        assert "compte-rendu.pdf" in page  # the file survives in a draft
    time.sleep(1.0)
    assert "Usurpation" not in _subjects(mail_operator, "paul")
    assert len(_audits(mail_web, "mail.send", before)) == 4
    assert {a.outcome for a in _audits(mail_web, "mail.send", before)} == {"sender_refused"}


def test_signatures_are_inserted_above_the_quote(
        mail_operator: Operator, mail_web: Web, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    paul, marie = as_user("paul"), as_user("marie")
    _delay(paul, 0, {boxes["paul"]: "Dr Paul Durand\nCardiologue",
                     boxes["org"]: "Pharmacie du Centre"})
    page = _page(paul, boxes["paul"])
    assert "\n\n-- \nDr Paul Durand\nCardiologue\n</textarea>" in page
    assert 'data-signature="Pharmacie du Centre"' in page
    assert "\n\n-- \nPharmacie du Centre\n</textarea>" in _page(paul, boxes["org"])
    assert compose(marie, boxes["marie"], to=PAUL, subject="Question signature",
                   body="Une question.").status_code == 302
    mail_operator.wait_for(address("paul"), lambda r: b"Question signature" in r)
    listing = text(paul.get(f"/courrier/{boxes['paul']}"))
    uid = re.search(r'/message/(\d+)\?dossier=INBOX">Question signature<', listing).group(1)  # type: ignore[union-attr]
    reply = _page(paul, boxes["paul"], f"?reponse={uid}&dossier=INBOX")
    body = re.search(r'<textarea[^>]*id="body"[^>]*>(.*?)</textarea>', reply, re.S).group(1)  # type: ignore[union-attr]
    assert body.index("-- \nDr Paul Durand") < body.index("a écrit :") < body.index("&gt; Une")
    saved = compose(paul, boxes["paul"], action="brouillon", to="marie.martin@mss.test",
                    subject="Avec signature", body="Texte.\n\n-- \nDr Paul Durand\nCardiologue")
    draft = text(paul.get(saved.headers["Location"]))
    kept = re.search(r'<textarea[^>]*id="body"[^>]*>(.*?)</textarea>', draft, re.S).group(1)  # type: ignore[union-attr]
    assert kept.count("Dr Paul Durand") == 1  # a draft is not signed twice


# ---------------------------------------------------------------------- Mise en forme
ATTACK = ('<p>Bonjour <b>Paul</b>,</p><ul><li>premier point</li><li><i>second</i></li></ul>'
          '<p><a href="https://exemple.fr/protocole">le protocole</a> '
          '<a href="javascript:alert(1)">piège</a></p><img src="x" onerror="alert(2)">'
          '<script>alert(3)</script><p style="color:red" onclick="alert(4)">Fin</p>')


def test_rich_text_leaves_as_sanitised_html_with_a_text_alternative(
        mail_operator: Operator, boxes: dict[str, int],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    sent = compose(marie, boxes["marie"], to=PAUL, subject="Mise en forme", format="html",
                   body="ignoré quand le HTML est là", body_html=ATTACK)
    assert sent.status_code == 302, text(sent)
    raw = mail_operator.wait_for(address("paul"), lambda r: b"Mise en forme" in r)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    plain = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<b>Paul</b>" in html and "<li><i>second</i></li>" in html
    assert 'href="https://exemple.fr/protocole"' in html
    for bad in ("javascript:", "onerror", "<img", "<script", "alert(", "style=", "onclick"):
        assert bad not in html, bad
    assert "- premier point" in plain and "le protocole <https://exemple.fr/protocole>" in plain
    assert "ignoré" not in plain and "alert" not in plain
    # Without the editor's script, format stays "text": the HTML posted is not used.
    compose(marie, boxes["marie"], to=PAUL, subject="Texte seul", body="Seulement le texte.",
            body_html="<b>jamais</b>")
    raw = mail_operator.wait_for(address("paul"), lambda r: b"Texte seul" in r)
    only = email.message_from_bytes(raw, policy=email.policy.default)
    assert only.get_body(("html",)) is None and b"jamais" not in raw


def test_a_rich_draft_reopens_in_the_editor(boxes: dict[str, int],
                                            as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    saved = compose(marie, boxes["marie"], action="brouillon", to=PAUL, subject="Riche",
                    format="html", body_html="<p><b>Gras</b> et <a href='https://e.fr'>lien</a>"
                    "</p><img src=x onerror=alert(1)>")
    page = text(marie.get(saved.headers["Location"]))
    assert 'data-initial="html"' in page
    stored = re.search(r'id="body_html"[^>]*>(.*?)</textarea>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "&lt;b&gt;Gras&lt;/b&gt;" in stored and "onerror" not in stored


# ---------------------------------------------------------------------- the hostile client
def test_what_a_hostile_client_posts(mail_web: Web, boxes: dict[str, int],
                                     as_user: Callable[[str], FlaskClient]) -> None:
    marie, paul = as_user("marie"), as_user("paul")
    _delay(marie, 30)
    assert compose(marie, boxes["marie"], to=PAUL, subject="Pas à toi",
                   body="Texte.").status_code == 302
    row = _row(mail_web, state=ob.HELD)
    token = csrf(paul)
    assert paul.post(f"/courrier/envoi/{row.id}/annuler",
                     data={"csrf_token": token}).status_code == 404  # another's: not found
    assert paul.get(f"/courrier/envoi/{row.id}").status_code == 404
    assert marie.post(f"/courrier/envoi/{row.id}/annuler").status_code == 400  # no CSRF
    assert marie.post(f"/courrier/{boxes['marie']}/ecrire",
                      data={"action": "autosave", "to": PAUL}).status_code == 400
    assert _row(mail_web, id=row.id).state == ob.HELD  # still going
    long_id = compose(marie, boxes["marie"], to=PAUL, subject="Identifiant", body="b",
                      compose_id="x" * 400)  # not a page id: a new one is made, it goes
    assert long_id.status_code == 302
    odd = _row(mail_web, state=ob.HELD)
    assert odd.id != row.id and re.fullmatch(r"[A-Za-z0-9_-]{16,40}", odd.compose_id)
    post_form(marie, f"/courrier/envoi/{odd.id}/annuler", {})
    for field, value in (("body", "x" * 400_001),
                         ("body_html", "<p>" + "x" * 800_001 + "</p>")):
        # URL-encoded: the test client would spool a multipart body this large to a
        # temporary file it never closes (a ResourceWarning in some later test).
        huge = post_form(marie, f"/courrier/{boxes['marie']}/ecrire",
                         {"action": "envoyer", "to": PAUL, "subject": "Trop long",
                          "format": "html", "body": "b", field: value})
        assert huge.status_code == 422
        assert "Le message dépasse 400 000 caractères" in text(huge)
    assert json.loads(marie.get(f"/courrier/envoi/{row.id}").data)["state"] == "held"
    post_form(marie, f"/courrier/envoi/{row.id}/annuler", {})
    assert _row(mail_web, id=row.id).state == ob.CANCELLED
