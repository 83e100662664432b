"""The list by conversation and a conversation's page, through Flask's test client on a real
Dovecot (THREAD=REFS, its fallback REFERENCES): grouping, order, unread, the saved choice and
``vue=``, reading marks read and is audited, another user's box or UID, and the server's
THREAD answer parsed strictly."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from core.audit import AuditRecord
from mailstore.errors import ImapError
from tests.gateway_fixtures import Operator
from tests.reading_support import append, message, thread
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, post_form, text
from webmail.mail import threads

pytest_plugins = ["tests.webmail_mail_fixtures"]
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def folder(mail_operator: Operator) -> Iterator[dict[str, list[int]]]:
    """Marie's "Fils" folder: a conversation of 4 (two read), one of 2 (read), a lone message,
    and two unrelated messages with the same subject (REFS does not group by subject)."""
    conn = mail_operator.imap(address("marie"))
    conn.create("Fils")
    paul, marie = address("paul"), address("marie")
    found = {
        "avc": thread(conn, [paul, marie], marie, "Suivi AVC de M. Blanc", 4, start=START,
                      seen_until=2, tag="avc", folder="Fils"),
        "bilan": thread(conn, [address("julie"), marie], marie, "Bilan sanguin", 2,
                        start=START + timedelta(hours=1), seen_until=2, tag="bilan",
                        folder="Fils"),
        "seul": [append(conn, message(paul, marie, "Message seul", "Seul.\n",
                                      when=START + timedelta(days=10)), "Fils")],
        "cr1": [append(conn, message(paul, marie, "Compte rendu", "Premier.\n",
                                     when=START + timedelta(days=5)), "Fils", seen=True)],
        "cr2": [append(conn, message(paul, marie, "Compte rendu", "Second.\n",
                                     when=START + timedelta(days=6)), "Fils", seen=True)],
    }
    # Marie's answer to the third message of "avc", in her Sent folder only; and another.
    third = f"<avc-2-{START.timestamp():.0f}@mss.test>"
    found["sent"] = [append(conn, message(marie, paul, "RE: Suivi AVC de M. Blanc",
                                          "Ma réponse envoyée.\n", reply_to=[third],
                                          when=START + timedelta(days=2, hours=3)),
                            "Sent", seen=True),
                     append(conn, message(marie, paul, "Autre sujet", "Rien à voir.\n"),
                            "Sent", seen=True)]
    conn.logout()
    yield found


@pytest.fixture
def marie(as_user: Callable[[str], FlaskClient]) -> FlaskClient:
    return as_user("marie")


def _lines(page: str) -> list[str]:
    return re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", page, re.S)


def test_the_list_by_conversation(folder: dict[str, list[int]], mail_web: Web,
                                  marie: FlaskClient) -> None:
    box = box_id(mail_web, address("marie"))
    page = text(marie.get(f"/courrier/{box}?dossier=Fils&vue=conversations"))
    lines = _lines(page)
    # Newest latest message first: seul (day 10), cr2 (6), cr1 (5), avc (3), bilan (1).
    subjects = [re.search(r'<td class="col-subject">.*?<a href="[^"]*">([^<]*)</a>', line,
                          re.S).group(1) for line in lines]  # type: ignore[union-attr]
    assert subjects == ["Message seul", "Compte rendu", "Compte rendu",
                        "RE: Suivi AVC de M. Blanc", "RE: Bilan sanguin"]
    avc = lines[3]
    assert 'class="unread"' in avc and "2 non lus" in avc  # two of its four unread
    # Who wrote, first first, by their directory names; Marie's own messages are « moi ».
    assert ">4<" in avc and ">Paul Durand, moi</a>" in avc
    assert ">Julie Bernard, moi</a>" in lines[4]
    assert f"/conversation/{folder['avc'][-1]}?dossier=Fils" in avc
    bilan = lines[4]
    assert 'class=""' in bilan and ">2<" in bilan  # read, two messages
    assert f"/message/{folder['seul'][0]}?dossier=Fils" in lines[0]  # one message: read view
    assert "5 conversations, 9 messages" in page
    assert 'aria-pressed="true">Conversations' in page


def test_the_choice_is_saved_and_vue_overrides_it(folder: dict[str, list[int]], mail_web: Web,
                                                  marie: FlaskClient) -> None:
    box = box_id(mail_web, address("marie"))
    assert "conv-table" not in text(marie.get(f"/courrier/{box}?dossier=Fils"))
    answer = post_form(marie, f"/courrier/{box}/vue", {"dossier": "Fils",
                                                      "vue": "conversations"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith(
        f"/courrier/{box}?dossier=Fils")
    assert "conv-table" in text(marie.get(f"/courrier/{box}?dossier=Fils"))
    assert "conv-table" not in text(marie.get(f"/courrier/{box}?dossier=Fils&vue=messages"))
    with mail_web.space.db.transaction() as session:
        event = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mail.preferences").order_by(AuditRecord.id.desc())).first()
        assert event is not None and json.loads(event.request)["conversations"] is True
    bad = post_form(marie, f"/courrier/{box}/vue", {"dossier": "Fils", "vue": "tout"},
                    follow_redirects=True)
    assert "Choix d’affichage invalide" in text(bad)
    no_csrf = marie.post(f"/courrier/{box}/vue", data={"dossier": "Fils",
                                                       "vue": "messages"})
    assert no_csrf.status_code == 400
    post_form(marie, f"/courrier/{box}/vue", {"dossier": "Fils", "vue": "messages"})
    assert "conv-table" not in text(marie.get(f"/courrier/{box}?dossier=Fils"))
    # The same choice in Mon compte › Préférences.
    prefs = text(marie.get("/compte/preferences"))
    assert "Affichage des listes" in prefs and 'value="messages" checked' in prefs
    saved = post_form(marie, "/courrier/affichage", {"vue": "conversations"})
    assert saved.headers["Location"].endswith("/compte/preferences")
    assert 'value="conversations" checked' in text(marie.get("/compte/preferences"))
    assert "conv-table" in text(marie.get(f"/courrier/{box}?dossier=Fils"))
    post_form(marie, "/courrier/affichage", {"vue": "messages"})


def test_reading_a_conversation(folder: dict[str, list[int]], mail_web: Web,
                                mail_operator: Operator, marie: FlaskClient) -> None:
    box = box_id(mail_web, address("marie"))
    avc = folder["avc"]
    page = text(marie.get(f"/courrier/{box}/conversation/{avc[1]}?dossier=Fils"))
    items = re.findall(r'<details class="conv-msg[^"]*" id="message-(\d+)"( open)?>', page)
    # Oldest first, from any of its UIDs; Marie's answer from her Sent folder in its place.
    assert [int(uid) for uid, _ in items] == [*avc[:3], folder["sent"][0], avc[3]]
    # Read ones folded, the unread and the latest open.
    assert [bool(opened) for _, opened in items] == [False, False, True, False, True]
    for index in range(4):
        assert f"Message {index + 1} de la conversation avc." in page
    assert "Ma réponse envoyée." in page and "Rien à voir" not in page
    assert page.count(">Envoyé</span>") == 1
    assert f"/message/{folder['sent'][0]}?dossier=Sent" in page  # its actions: in Sent
    assert page.count('class="badge-box') == 5 and page.count(">Répondre à tous</a>") == 5
    assert "5 messages dans cette conversation" in page
    conn = mail_operator.imap(address("marie"))
    conn.select("Fils", readonly=True)
    _, data = conn.uid("SEARCH", "UNSEEN")
    conn.logout()
    assert not set(avc) & {int(u) for u in data[0].split()}  # all shown, all read now
    with mail_web.space.db.transaction() as session:
        event = session.scalars(select(AuditRecord).where(
            AuditRecord.action == "mail.read").order_by(AuditRecord.id.desc())).first()
        assert event is not None and json.loads(event.request)["uids"] == avc
        assert json.loads(event.request)["sent_uids"] == folder["sent"][:1]
        assert json.loads(event.request)["view"] == "conversation"
        assert event.target == address("marie")


def test_acting_on_ticked_conversations(folder: dict[str, list[int]], mail_web: Web,
                                        mail_operator: Operator, marie: FlaskClient) -> None:
    box = box_id(mail_web, address("marie"))
    page = text(marie.get(f"/courrier/{box}?dossier=Fils&vue=conversations"))
    bilan = ",".join(map(str, folder["bilan"]))
    assert f'name="uid" value="{bilan}" form="bulk"' in page and 'id="bulk"' in page
    answer = post_form(marie, f"/courrier/{box}/marquer",
                       {"dossier": "Fils", "etat": "non-lu", "uid": bilan,
                        "retour": f"/courrier/{box}?dossier=Fils&vue=conversations"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("vue=conversations")
    conn = mail_operator.imap(address("marie"))
    conn.select("Fils", readonly=True)
    unseen = {int(u) for u in conn.uid("SEARCH", "UNSEEN")[1][0].split()}
    conn.logout()
    assert set(folder["bilan"]) <= unseen  # both messages of the conversation
    # Anything that is not a UID in the list is ignored, never an error.
    junk = post_form(marie, f"/courrier/{box}/marquer",
                     {"dossier": "Fils", "etat": "lu", "uid": f"{bilan},abc,,0,99999999999"})
    assert junk.status_code == 302
    conn = mail_operator.imap(address("marie"))
    conn.select("Fils", readonly=True)
    unseen = {int(u) for u in conn.uid("SEARCH", "UNSEEN")[1][0].split()}
    conn.logout()
    assert not set(folder["bilan"]) & unseen


def test_another_users_box_or_uid(folder: dict[str, list[int]], mail_web: Web,
                                  as_user: Callable[[str], FlaskClient]) -> None:
    marie_box = box_id(mail_web, address("marie"))
    paul = as_user("paul")
    paul_box = box_id(mail_web, address("paul"))
    uid = folder["avc"][0]
    assert paul.get(f"/courrier/{marie_box}/conversation/{uid}?dossier=Fils").status_code == 404
    # His own box, her UID: his session cannot see her folder.
    assert paul.get(f"/courrier/{paul_box}/conversation/{uid}?dossier=Fils").status_code == 404
    assert paul.get(f"/courrier/{paul_box}/conversation/999999?dossier=INBOX"
                    ).status_code == 404
    assert paul.get(f"/courrier/{paul_box}/conversation/0").status_code == 404
    assert paul.get(f"/courrier/{paul_box}/conversation/{uid}?dossier=../marie"
                    ).status_code == 404
    post = post_form(paul, f"/courrier/{marie_box}/vue", {"vue": "conversations"})
    assert post.status_code == 404


def test_thread_answers_parsed_strictly() -> None:
    assert threads.parse_threads(b"(2)(3 6 (4 23)(44 7 96))") == [[2], [3, 6, 4, 23, 44, 7, 96]]
    assert threads.parse_threads(b"((3)(5))(1)") == [[3, 5], [1]]  # parent missing
    assert threads.parse_threads(b"") == []
    for broken in (b"(1 2", b"1 2)", b"(1))("):
        with pytest.raises(ImapError):
            threads.parse_threads(broken)


def test_references_gives_the_same_conversations(folder: dict[str, list[int]],
                                                 mail_web: Web) -> None:
    """The fallback algorithm (RFC 5256 REFERENCES) on the same folder: the same threads
    by reference; unlike REFS it also groups the two "Compte rendu" by subject."""
    from webmail.mail.access import pool

    with mail_web.app.app_context():
        with pool().session(address("marie")) as session:
            assert threads.algorithm(session) == "REFS"
            refs = threads.threads(session, "Fils", "REFS")
            references = threads.threads(session, "Fils", "REFERENCES")
            alone = threads.threads(session, "Fils", None)
    assert sorted(folder["avc"]) in [sorted(t) for t in refs + references]
    assert sorted(folder["cr1"] + folder["cr2"]) in [sorted(t) for t in references]
    assert [folder["cr1"][0]] in refs and [folder["cr2"][0]] in refs
    assert sorted(len(t) for t in alone) == [1] * 9
