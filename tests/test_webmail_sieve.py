"""Out-of-office replies and filters (issue #17) with the real parts: the webmail's forms
(Flask test client), the script it installs through ManageSieve, Dovecot's Pigeonhole running
it on LMTP deliveries, and the vacation replies leaving through the gateway's submission port
(authenticated, trust space only, signed). ``sievelib`` is the independent ManageSieve client.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta

import pytest
from flask.testing import FlaskClient
from sievelib.managesieve import Client as SieveClient
from sqlalchemy import select

from core.audit import AuditRecord
from mailstore.lmtp import LmtpClient
from mailstore.sievescript import Rule, Vacation, render
from spool.models import QueueRecipient
from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD, free_port
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, post_form, text

pytest_plugins = ["tests.webmail_mail_fixtures"]
HOSTILE = 'Dr "Martin" \\ C:\\temp ${x} require "vnd.dovecot.execute";'
HOSTILE_BODY = ('Bonjour,\r\n.\r\n..deux points\r\nrequire "vnd.dovecot.execute";\r\n'
                'execute "rm";\r\ntext:\r\n.\r\nFin "guillemets" \\ barre.')


@pytest.fixture(scope="module")
def operator_overrides() -> dict[str, object]:
    # Dovecot hands vacation replies to the gateway's submission port: a known port, not 0.
    return {"submission_port": free_port(), "submissions_port": free_port(),
            "relay_port": free_port()}


def today() -> date:
    from webmail.mail.mailrules import today as paris_today
    return paris_today()


def set_vacation(client: FlaskClient, box: int, **fields: str) -> object:
    data = {"actif": "1", "debut": "", "fin": "", "objet": "Absence",
            "message": "Je suis absente.", "jours": "7"}
    data.update(fields)
    return post_form(client, f"/courrier/{box}/reponse-automatique", data)


def send(op: Operator, sender: str, to: str, subject: str, headers: str = "") -> str:
    """``sender`` (demo password, submission port) writes to ``to``; the Message-ID."""
    message_id = f"<{os.urandom(6).hex()}@mss.test>"
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
           f"{headers}Date: Mon, 01 Dec 2025 10:00:00 +0100\r\n\r\nBonjour.\r\n").encode()
    op.submit(sender, [to], raw)
    return message_id


def deliver(op: Operator, sender: str, to: str, subject: str, headers: str = "") -> None:
    """Straight into Dovecot over LMTP, as the gateway's queue does (any envelope sender)."""
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: "
           f"<{os.urandom(6).hex()}@x.test>\r\n{headers}\r\nBonjour.\r\n").encode()
    result = LmtpClient.for_settings(op.settings).deliver(raw, sender, [to])
    assert result[to].delivered, result


def auto_replies(op: Operator, who: str, subject: str) -> list[email.message.Message]:
    found = []
    for raw in op.messages(who):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if str(msg.get("Auto-Submitted", "")).startswith("auto-replied") and \
                str(msg["Subject"]) == subject:
            found.append(msg)
    return found


def wait_delivered(op: Operator, who: str, subject: str, folder: str = "INBOX") -> None:
    op.wait_for(who, lambda raw: f"Subject: {subject}".encode() in raw, folder=folder)


def quiet(op: Operator, seconds: float = 3.0) -> None:
    """Let the gateway's queue run (a reply that would come has come by then)."""
    time.sleep(seconds)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with op.space.db.reading() as conn:
            pending = conn.execute(select(QueueRecipient).where(
                QueueRecipient.state.in_(("queued", "delivering")))).first()
        if pending is None:
            return
        time.sleep(0.2)


@pytest.fixture
def sieve_client(mail_operator: Operator, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[[str], SieveClient]]:
    """sievelib over STARTTLS, trusting mss's CA, as a person with their password."""
    monkeypatch.setenv("SSL_CERT_FILE", str(mail_operator.space.ca_file))
    opened: list[SieveClient] = []

    def connect(who: str) -> SieveClient:
        client = SieveClient("127.0.0.1", mail_operator.settings.managesieve_port)
        assert client.connect(address(who), PASSWORD, starttls=True, authmech="PLAIN")
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.logout()


# ---------------------------------------------------------------------- the reply itself
def test_one_reply_per_sender_through_the_gateway(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient],
        sieve_client: Callable[[str], SieveClient]) -> None:
    marie, paul, box = address("marie"), address("paul"), box_id(mail_web, address("marie"))
    client = as_user("marie")
    page = client.get(f"/courrier/{box}/reponse-automatique")
    assert page.status_code == 200 and "Réponse automatique" in text(page)
    end = today() + timedelta(days=5)
    answer = set_vacation(client, box, debut=(today() - timedelta(days=1)).isoformat(),
                          fin=end.strftime("%d/%m/%Y"), objet="Absente jusqu’au lundi",
                          message="Je suis absente.\nEn cas d’urgence : le cabinet.")
    assert answer.status_code == 302, text(answer)
    listing = text(client.get(f"/courrier/{box}"))
    assert f"Réponse automatique active jusqu’au {end:%d/%m/%Y}" in listing
    form = text(client.get(f"/courrier/{box}/reponse-automatique"))  # the form round-trips
    assert "Absente jusqu’au lundi" in form and f'value="{end:%d/%m/%Y}"' in form
    assert " checked" in form
    # A real ManageSieve client sees the webmail's script, active, with the reply in it.
    sieve = sieve_client("marie")
    active, others = sieve.listscripts()  # sievelib: (active, the inactive ones)
    assert active == "mss-webmail" and others == []
    assert 'vacation :days 7 :subject "Absente jusqu’au lundi"' in sieve.getscript("mss-webmail")

    first = send(mail_operator, paul, marie, "Question 1")
    send(mail_operator, paul, marie, "Question 2")
    wait_delivered(mail_operator, marie, "Question 2")
    replies = auto_replies(mail_operator, paul, "Absente jusqu’au lundi")
    if not replies:
        mail_operator.wait_for(paul, lambda raw: b"auto-replied" in raw)
    quiet(mail_operator)
    replies = auto_replies(mail_operator, paul, "Absente jusqu’au lundi")
    assert len(replies) == 1  # two messages, one reply
    reply = replies[0]
    assert reply["Auto-Submitted"].startswith("auto-replied") and reply["In-Reply-To"] == first
    assert reply["From"].addresses[0].addr_spec == marie
    assert "smime=pass" in str(reply["Authentication-Results"])  # signed by the gateway
    body = reply.get_body(("plain",))
    assert body is not None and "En cas d’urgence : le cabinet." in body.get_content()
    # Submitted by the mail store's service account for Marie, like any other message.
    with mail_web.space.db.transaction() as session:
        submits = [r.request for r in session.scalars(select(AuditRecord).where(
            AuditRecord.action == "smtp.submit", AuditRecord.actor == "mailstore@mss.test"))]
        audits = [r.request for r in session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mail.autoreply", AuditRecord.target == marie))]
    assert submits and json.loads(submits[-1])["as"] == marie
    assert audits and "Absente" not in audits[-1]  # audited, without the text
    assert json.loads(audits[-1])["enabled"] is True


def test_no_reply_to_lists_automated_mail_or_bulk(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    emma, julie = address("emma"), address("julie")
    assert set_vacation(as_user("emma"), box_id(mail_web, emma),
                        objet="Emma absente").status_code == 302
    for i, header in enumerate(("List-Id: <infos.ars.test>\r\n",
                                "Auto-Submitted: auto-generated\r\n",
                                "Precedence: bulk\r\n")):
        deliver(mail_operator, julie, emma, f"Automatique {i}", header)
    deliver(mail_operator, julie, emma, "Personnel")  # the control: this one is answered
    mail_operator.wait_for(julie, lambda raw: b"Subject: Emma absente" in raw)
    quiet(mail_operator)
    assert len(auto_replies(mail_operator, julie, "Emma absente")) == 1


def test_no_reply_outside_the_dates(mail_operator: Operator, mail_web: Web,
                                    as_user: Callable[[str], FlaskClient]) -> None:
    leo, julie, box = address("leo"), address("julie"), box_id(mail_web, address("leo"))
    client = as_user("leo")
    start = today() + timedelta(days=2)
    assert set_vacation(client, box, debut=start.isoformat(),
                        fin=(start + timedelta(days=3)).isoformat(),
                        objet="Léo en congés").status_code == 302
    assert f"Réponse automatique programmée du {start:%d/%m/%Y}" in \
        text(client.get(f"/courrier/{box}"))
    deliver(mail_operator, julie, leo, "Avant les congés")
    wait_delivered(mail_operator, leo, "Avant les congés")
    quiet(mail_operator)
    assert auto_replies(mail_operator, julie, "Léo en congés") == []


def test_a_reply_outside_the_trust_space_is_refused_and_nothing_breaks(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    nina = address("nina")
    assert set_vacation(as_user("nina"), box_id(mail_web, nina),
                        objet="Nina absente").status_code == 302
    deliver(mail_operator, "quelquun@gmail.com", nina, "Venu de dehors")
    wait_delivered(mail_operator, nina, "Venu de dehors")  # delivered all the same
    quiet(mail_operator)
    with mail_web.space.db.reading() as conn:
        queued = conn.scalars(select(QueueRecipient.address).where(
            QueueRecipient.address == "quelquun@gmail.com")).all()
    assert queued == []  # refused at RCPT by the gateway: never queued
    log = (mail_operator.settings.data_dir / "log" / "dovecot.log").read_text()
    assert "refusé par la passerelle pour nina.morel@mss.test (RCPT <quelquun@gmail.com>) : " \
           "550 5.7.1" in log
    assert "Nina absente" not in log and "Venu de dehors" not in log  # no content in logs
    # The mailbox still answers people of the trust space.
    deliver(mail_operator, address("julie"), nina, "Depuis l’espace de confiance")
    mail_operator.wait_for(address("julie"), lambda raw: b"Subject: Nina absente" in raw)


def test_the_service_account_cannot_send_as_someone_else(mail_operator: Operator) -> None:
    """The mail store's account speaks for the mailbox whose script ran (authzid), and the
    gateway checks the From: like for anyone: a vacation ``:from`` naming another mailbox is
    refused."""
    secret = json.loads((mail_operator.settings.data_dir / "dovecot" / "submit.json")
                        .read_text())["secret"]
    marie, paul = address("marie"), address("paul")
    with smtplib.SMTP("127.0.0.1", mail_operator.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=mail_operator.client_context())
        smtp.ehlo()
        smtp.auth("PLAIN", lambda challenge=None: f"{marie}\0mailstore@mss.test\0{secret}",
                  initial_response_ok=True)
        refused = smtp.mail(paul)
        assert refused[0] == 550, refused  # MAIL FROM another mailbox
        assert smtp.mail(marie)[0] == 250
        assert smtp.rcpt(paul)[0] == 250
        code, reply = smtp.data(f"From: {paul}\r\nTo: {paul}\r\nSubject: x\r\n\r\nx\r\n".encode())
        assert code == 550 and b"5.7.1" in reply  # From: another mailbox


# ---------------------------------------------------------------------- filters
def test_filters_move_flag_and_mark_read(mail_operator: Operator, mail_web: Web,
                                         as_user: Callable[[str], FlaskClient]) -> None:
    julie, paul = address("julie"), address("paul")
    box, client = box_id(mail_web, julie), as_user("julie")
    assert post_form(client, f"/courrier/{box}/dossiers",
                     {"operation": "create", "nom": "Labo"}).status_code == 302
    url = f"/courrier/{box}/filtres"
    for field, needle, action, folder in (("subject", "labo", "move", "Labo"),
                                          ("from", "paul.durand", "flag", ""),
                                          ("subject", "info", "read", "")):
        answer = post_form(client, url, {"operation": "add", "champ": field, "texte": needle,
                                         "action": action, "dossier_cible": folder})
        assert answer.status_code == 302, text(answer)
    again = post_form(client, url, {"operation": "add", "champ": "subject", "texte": "labo",
                                    "action": "move", "dossier_cible": "Labo"})
    assert again.status_code == 400 and "Ce filtre existe déjà" in text(again)  # double click
    page = text(client.get(url))
    assert page.index("labo") < page.index("paul.durand") < page.index("info")
    send(mail_operator, paul, julie, "Résultats labo")
    send(mail_operator, paul, julie, "Question")
    send(mail_operator, address("marie"), julie, "Petite info")
    wait_delivered(mail_operator, julie, "Résultats labo", folder="Labo")
    wait_delivered(mail_operator, julie, "Petite info")
    conn = mail_operator.imap(julie)
    try:
        conn.select("INBOX", readonly=True)
        flagged = conn.search(None, "FLAGGED")[1][0].split()
        seen = conn.search(None, "SEEN")[1][0].split()
        subjects = {n: conn.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
                    for n in conn.search(None, "ALL")[1][0].split()}
    finally:
        conn.logout()
    assert [b"Question" in subjects[n] for n in flagged] == [True]
    assert [b"Petite info" in subjects[n] for n in seen] == [True]
    assert not any(b"labo" in s for s in subjects.values())  # moved away
    # Paul's own Sent copy is not filtered by his mailbox (the gateway's +Sent delivery).
    wait_delivered(mail_operator, paul, "Résultats labo", folder="Sent")


def test_filters_edit_reorder_delete_round_trip(mail_web: Web,
                                                as_user: Callable[[str], FlaskClient]) -> None:
    box, client = box_id(mail_web, address("emma")), as_user("emma")
    url = f"/courrier/{box}/filtres"
    for needle in ("un", "deux"):
        assert post_form(client, url, {"operation": "add", "champ": "subject", "texte": needle,
                                       "action": "read"}).status_code == 302
    ids = re.findall(r'name="id" value="([0-9a-f]{12})"', text(client.get(url)))
    first, second = dict.fromkeys(ids)  # each rule's id, in order
    assert post_form(client, url, {"operation": "down", "id": first}).status_code == 302
    page = text(client.get(url))
    assert page.index("« <strong>deux</strong> »") < page.index("« <strong>un</strong> »")
    edit = text(client.get(url, query_string={"modifier": second}))
    assert "Modifier le filtre" in edit and 'value="deux"' in edit
    assert post_form(client, url, {"operation": "update", "id": second, "champ": "from",
                                   "texte": "trois", "action": "flag"}).status_code == 302
    assert post_form(client, url, {"operation": "delete", "id": first}).status_code == 302
    twice = post_form(client, url, {"operation": "delete", "id": first})  # double click
    assert twice.status_code == 302
    page = text(client.get(url))
    assert "« <strong>trois</strong> »" in page and "<strong>un</strong>" not in page
    assert "Ce filtre n’existe plus" in page


# ---------------------------------------------------------------------- hostile input
def test_hostile_strings_end_up_literal(mail_operator: Operator, mail_web: Web,
                                       as_user: Callable[[str], FlaskClient],
                                       sieve_client: Callable[[str], SieveClient]) -> None:
    paul, marie = address("paul"), address("marie")
    box, client = box_id(mail_web, paul), as_user("paul")
    assert set_vacation(client, box, objet=HOSTILE, message=HOSTILE_BODY).status_code == 302
    assert post_form(client, f"/courrier/{box}/filtres",
                     {"operation": "add", "champ": "subject", "texte": HOSTILE,
                      "action": "flag"}).status_code == 302
    script = sieve_client("paul").getscript("mss-webmail")
    assert "vnd.dovecot.execute" not in script.split("\n", 3)[2]  # the require line
    send(mail_operator, marie, paul, HOSTILE)
    mail_operator.wait_for(marie, lambda raw: b"auto-replied" in raw and b"vnd" in raw)
    reply = next(m for m in (email.message_from_bytes(r, policy=email.policy.default)
                             for r in mail_operator.messages(marie))
                 if str(m.get("Auto-Submitted", "")).startswith("auto-replied")
                 and "vnd.dovecot" in str(m["Subject"]))
    assert str(reply["Subject"]) == HOSTILE
    body = reply.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").strip("\n") == \
        HOSTILE_BODY.replace("\r\n", "\n")
    conn = mail_operator.imap(paul)  # the filter matched the quotes and backslashes literally
    try:
        conn.select("INBOX", readonly=True)
        assert conn.search(None, "FLAGGED")[1][0].split()
    finally:
        conn.logout()


@pytest.mark.parametrize("fields, error", [
    ({"objet": "x" * 201}, "L’objet est trop long"),
    ({"message": "x" * 4001}, "Le message est trop long"),
    ({"objet": "Ligne\r\nBcc: x@y"}, None),  # folded to one line: accepted as text
    ({"message": "nul\x00"}, "Caractère non autorisé"),
    ({"debut": "31/02/2026"}, "Date invalide"),
    ({"debut": "2026-12-10", "fin": "2026-12-01"}, "La date de fin précède"),
    ({"jours": "0"}, "entre 1 et 90"),
    ({"jours": "9999999999"}, "entre 1 et 90"),
    ({"jours": "²"}, "entre 1 et 90"),  # a digit for str.isdigit, not for int()
    ({"objet": ""}, "Indiquez l’objet"),
])
def test_the_form_refuses_what_cannot_go_into_a_script(
        mail_web: Web, as_user: Callable[[str], FlaskClient], fields: dict[str, str],
        error: str | None) -> None:
    client, box = as_user("leo"), box_id(mail_web, address("leo"))
    answer = set_vacation(client, box, **fields)
    if error is None:
        assert answer.status_code == 302
        return
    assert answer.status_code == 400 and error in text(answer)


# ---------------------------------------------------------------------- who may
def test_csrf_and_other_peoples_mailboxes(mail_web: Web,
                                          as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    own, pauls = box_id(mail_web, address("marie")), box_id(mail_web, address("paul"))
    no_token = marie.post(f"/courrier/{own}/reponse-automatique",
                          data={"actif": "1", "objet": "x", "message": "y", "jours": "7"})
    assert no_token.status_code == 400
    for url in (f"/courrier/{pauls}/reponse-automatique", f"/courrier/{pauls}/filtres"):
        assert marie.get(url).status_code == 404
        assert post_form(marie, url, {"actif": "0", "operation": "add"}).status_code == 404
    with mail_web.space.db.transaction() as session:
        refused = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mail.access", AuditRecord.outcome == "not_found",
            AuditRecord.actor == address("marie"))).all()
    assert refused


def test_an_organisational_mailbox_by_its_administrator_only(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    org, box = address("org"), box_id(mail_web, address("org"))
    julie = as_user("julie")  # a user of the pharmacy's mailbox, not an administrator
    assert julie.get(f"/courrier/{box}/reponse-automatique").status_code == 403
    assert set_vacation(julie, box).status_code == 403
    paul = as_user("paul")  # its administrator
    assert set_vacation(paul, box, objet="Pharmacie fermée",
                        message="Fermée pour inventaire.").status_code == 302
    assert "Réponse automatique active" in text(julie.get(f"/courrier/{box}"))
    send(mail_operator, address("marie"), org, "Commande")
    mail_operator.wait_for(address("marie"),
                           lambda raw: b"auto-replied" in raw and b"Pharmacie" in raw)
    reply = next(m for m in (email.message_from_bytes(r, policy=email.policy.default)
                             for r in mail_operator.messages(address("marie")))
                 if str(m["Subject"]) == "Pharmacie fermée")
    assert reply["From"].addresses[0].addr_spec == org


def test_a_script_uploaded_with_another_client_is_never_replaced_silently(
        mail_web: Web, as_user: Callable[[str], FlaskClient],
        sieve_client: Callable[[str], SieveClient]) -> None:
    sieve = sieve_client("julie")
    mine = render(Vacation("Mon script", "Absente."), [Rule("subject", "x", "read")])
    assert sieve.putscript("perso", mine) and sieve.setactive("perso")
    client, box = as_user("julie"), box_id(mail_web, address("julie"))
    page = text(client.get(f"/courrier/{box}/reponse-automatique"))
    assert "Un autre script de filtrage est actif" in page and "« perso »" in page
    refused = set_vacation(client, box, objet="Par le webmail")
    assert refused.status_code == 409 and "Remplacer le script actif" in text(refused)
    assert sieve.listscripts()[0] == "perso"  # still active, untouched
    assert sieve.getscript("perso").strip() == mine.strip()
    assert set_vacation(client, box, objet="Par le webmail", remplacer="1").status_code == 302
    active, others = sieve.listscripts()
    assert active == "mss-webmail" and "perso" in others  # kept, inactive
    assert sieve.getscript("perso").strip() == mine.strip()
    assert "Un autre script" not in text(client.get(f"/courrier/{box}/reponse-automatique"))


def test_managesieve_refuses_what_mss_does_not_offer(
        sieve_client: Callable[[str], SieveClient]) -> None:
    sieve = sieve_client("leo")
    assert not sieve.putscript("x", 'require "vnd.dovecot.execute";\nexecute "id";\n')
    assert not sieve.putscript("y", 'require "enotify";\nnotify "mailto:a@b.test";\n')
    _active, others = sieve.listscripts()
    assert "x" not in others and "y" not in others


def test_managesieve_requires_tls_before_login(mail_operator: Operator) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", mail_operator.settings.managesieve_port),
                                  timeout=10) as sock:
        greeting = sock.recv(4096)
        assert b'"STARTTLS"' in greeting
        login = f"\0{address('leo')}\0{PASSWORD}".encode()
        import base64
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(login) + b'"\r\n')
        assert sock.recv(4096).startswith(b"NO")


def test_an_organisational_mailbox_never_logs_in_with_a_password(
        mail_operator: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its passdb row (for the webmail's master user, mailstore.sql) has no password: IMAP and
    ManageSieve refuse it whatever is tried, while the master user opens it."""
    import imaplib

    org = address("org")
    for password in (PASSWORD, "", "x"):
        conn = mail_operator.space.imaps()
        with pytest.raises(imaplib.IMAP4.error):
            conn.login(org, password)
        conn.logout()
    monkeypatch.setenv("SSL_CERT_FILE", str(mail_operator.space.ca_file))
    sieve = SieveClient("127.0.0.1", mail_operator.settings.managesieve_port)
    assert not sieve.connect(org, PASSWORD, starttls=True, authmech="PLAIN")
    from mailstore.managesieve import SieveService

    with SieveService.for_settings(mail_operator.settings).session(org) as conn:
        assert conn.list_scripts() is not None


@pytest.mark.parametrize("target", ["shared/paul.durand@mss.test/INBOX", "../Sent", "Trash",
                                    "Inexistant", "INBOX\r\nx"])
def test_a_filter_moves_only_into_a_folder_of_the_mailbox(
        mail_web: Web, as_user: Callable[[str], FlaskClient], target: str) -> None:
    client, box = as_user("leo"), box_id(mail_web, address("leo"))
    answer = post_form(client, f"/courrier/{box}/filtres",
                       {"operation": "add", "champ": "from", "texte": "x", "action": "move",
                        "dossier_cible": target})
    assert answer.status_code == 400 and "Choisissez un dossier existant" in text(answer)
