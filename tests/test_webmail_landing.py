"""Issue #15 items 3 and 7, through Flask's test client on a real Dovecot and gateway: every
login lands in the Boîte de réception (operators: their pages), a ``next`` page wins only when
it is a path of this site (open-redirect attempts land in the inbox), unread counts in the top
bar, the box switcher and the title, a store that does not answer breaks no page; reply and
forward quotes give the hour in Paris time, winter and summer."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask.testing import FlaskClient

from core.localtime import french_datetime
from mailstore.config import SEPARATOR, SHARED_PREFIX
from mailstore.errors import ImapError
from tests.gateway_fixtures import Operator
from tests.webmail_helpers import OPERATOR, PASSWORD, Web, login_operator, post
from tests.webmail_mail_helpers import address, box_id, text
from webmail.auth.landing import safe_next

pytest_plugins = ["tests.webmail_mail_fixtures"]
ATTACKS = ["//evil.example", "https://evil.example", "/\\evil.example", "\\\\evil.example",
           "/\t/evil.example", "http:/evil.example", "//evil.example/courrier",
           "javascript:alert(1)", "/%0a/evil.example".replace("%0a", "\n"), "evil.example", ""]


# ------------------------------------------------------------------ pure functions
def test_safe_next_takes_local_paths_only() -> None:
    assert safe_next("/courrier/3?dossier=Sent") == "/courrier/3?dossier=Sent"
    assert safe_next("/compte") == "/compte"
    for hostile in [*ATTACKS, None, 42, "/" + "a" * 3000]:
        assert safe_next(hostile) is None, hostile


def test_times_people_read_are_paris_time() -> None:
    assert french_datetime(datetime(2026, 12, 3, 20, 9, tzinfo=UTC)) == "03/12/2026 à 21:09"
    assert french_datetime(datetime(2026, 6, 15, 8, 30, tzinfo=UTC)) == "15/06/2026 à 10:30"
    assert french_datetime(datetime(2026, 12, 3, 20, 9)) == "03/12/2026 à 21:09"  # naive: UTC
    assert french_datetime(None) == "—"


# ------------------------------------------------------------------ landing
def _code_login(web: Web, client: FlaskClient, who: str, query: str = "") -> str:
    """Password + e-mailed code; the Location of the final answer."""
    answer = post(client, "/connexion" + query, {"identifier": address(who),
                                                 "password": PASSWORD},
                  action="/connexion" + query)
    assert answer.status_code == 302, text(answer)
    code = web.mailer.last_code(f"{who}@exemple.fr")
    answer = post(client, "/connexion/code", {"code": code})
    assert answer.status_code == 302, text(answer)
    return str(answer.headers["Location"])


def test_password_and_card_logins_land_in_the_inbox(mail_web: Web) -> None:
    inbox = f"/courrier/{box_id(mail_web, address('marie'))}"
    client = mail_web.client()
    assert _code_login(mail_web, client, "marie") == inbox
    assert client.get("/").headers["Location"] == inbox
    assert client.get("/connexion").headers["Location"] == inbox  # already logged in
    page = text(client.get(inbox))
    assert "<title>" in page and "Boîte de réception" in page
    card = mail_web.client(card="marie")
    answer = post(card, "/connexion", {}, action="/connexion/carte")
    assert answer.headers["Location"] == inbox


def test_operator_lands_on_the_operator_pages(mail_web: Web) -> None:
    client = mail_web.client()
    login_operator(mail_web, client)
    assert client.get("/").headers["Location"] == "/operateur/inscriptions"
    assert client.get("/operateur/inscriptions").status_code == 200
    assert OPERATOR  # the TOTP operator of the fixtures


def test_the_page_that_asked_for_the_login_wins(mail_web: Web) -> None:
    sent = f"/courrier/{box_id(mail_web, address('julie'))}?dossier=Sent"
    client = mail_web.client()
    asked = client.get(sent)
    assert asked.status_code == 302
    target = urlsplit(asked.headers["Location"])
    assert target.path == "/connexion" and parse_qs(target.query) == {"next": [sent]}
    login_page = text(client.get(asked.headers["Location"]))
    assert 'action="/connexion?next=' in login_page
    assert _code_login(mail_web, client, "julie", "?next=" + quote(sent, safe="")) == sent


@pytest.mark.parametrize("hostile", ["//evil.example", "https://evil.example",
                                     "/\\evil.example", "/\t/evil.example"])
def test_open_redirect_attempts_land_in_the_inbox(mail_web: Web, hostile: str) -> None:
    inbox = f"/courrier/{box_id(mail_web, address('marie'))}"
    client = mail_web.client()
    query = "?next=" + quote(hostile, safe="")
    assert "evil" not in text(client.get("/connexion" + query))  # not even in the form
    assert _code_login(mail_web, client, "marie", query) == inbox
    card = mail_web.client(card="marie")
    answer = post(card, "/connexion", {}, action="/connexion/carte" + query)
    assert answer.headers["Location"] == inbox
    assert card.get("/connexion" + query).headers["Location"] == inbox


# ------------------------------------------------------------------ unread counts
def _append(mail_operator: Operator, who: str, subject: str, date: str) -> None:
    conn = mail_operator.imap(address(who))
    conn.append("INBOX", None, None, (
        f"From: marie.martin@mss.test\r\nTo: {address(who)}\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <{subject.replace(' ', '.')}@mss.test>\r\n\r\n"
        "Bonjour,\r\nle compte rendu suit.\r\n").encode())
    conn.logout()


def _unseen(mail_operator: Operator, who: str, folder: str = "INBOX") -> int:
    conn = mail_operator.imap(address(who))
    found = conn.status(f'"{folder}"', "(UNSEEN)")[1][0]
    conn.logout()
    return int(re.search(rb"UNSEEN (\d+)", found).group(1))  # type: ignore[union-attr]


def test_unread_counts_in_title_top_bar_and_box_switcher(
        mail_operator: Operator, mail_web: Web,
        as_user: Callable[[str], FlaskClient]) -> None:
    _append(mail_operator, "paul", "Non lu un", "Thu, 03 Dec 2026 20:09:00 +0000")
    _append(mail_operator, "paul", "Non lu deux", "Thu, 03 Dec 2026 20:10:00 +0000")
    org_unread = _unseen(mail_operator, "paul", f"{SHARED_PREFIX}{address('org')}{SEPARATOR}INBOX")
    mine = _unseen(mail_operator, "paul")
    assert mine >= 2
    paul = as_user("paul")
    box = box_id(mail_web, address("paul"))
    page = text(paul.get(f"/courrier/{box}"))
    assert f"<title>({mine}) Boîte de réception — " in page
    assert f'<span class="nav-count" aria-label="{mine + org_unread} non lus">' in page
    switch = page[page.index('class="box-switch"'):page.index('class="folder-list"')]
    assert f'>{mine}</span>' in switch
    assert (f'>{org_unread}</span>' in switch) == bool(org_unread)
    sent = text(paul.get(f"/courrier/{box}?dossier=Sent"))
    assert "<title>Messages envoyés — " in sent  # no count on Sent
    account = text(paul.get("/compte"))
    assert 'class="nav-count"' in account  # the top bar on every page


class _DeadPool:
    """An IMAP pool whose store never answers."""

    def session(self, address: str):  # type: ignore[no-untyped-def]
        raise ImapError("magasin injoignable")


def test_a_store_that_does_not_answer_breaks_no_page(
        mail_web: Web, as_user: Callable[[str], FlaskClient]) -> None:
    paul = as_user("paul")
    real = mail_web.app.extensions.get("mss.imap")
    mail_web.app.extensions["mss.imap"] = _DeadPool()
    try:
        account = paul.get("/compte")
        assert account.status_code == 200 and 'class="nav-count"' not in text(account)
        assert paul.get("/annuaire").status_code == 200
    finally:
        mail_web.app.extensions["mss.imap"] = real


# ------------------------------------------------------------------ hours in quotes
def _uid(client: FlaskClient, box: int, subject: str) -> int:
    page = text(client.get(f"/courrier/{box}"))
    for uid, title in re.findall(r'<a href="[^"]*/message/(\d+)\?dossier=[^"]*">([^<]*)</a>',
                                 page):
        if title.strip() == subject:
            return int(uid)
    raise AssertionError(f"{subject} absent")


def test_reply_and_forward_quote_the_hour_in_paris_time(
        mail_operator: Operator, mail_web: Web,
        as_user: Callable[[str], FlaskClient]) -> None:
    _append(mail_operator, "julie", "Bilan hiver", "Thu, 03 Dec 2026 20:09:00 +0000")
    _append(mail_operator, "julie", "Bilan été", "Mon, 15 Jun 2026 08:30:00 +0000")
    julie = as_user("julie")
    box = box_id(mail_web, address("julie"))
    winter, summer = _uid(julie, box, "Bilan hiver"), _uid(julie, box, "Bilan été")
    listed = text(julie.get(f"/courrier/{box}"))
    assert "03/12/2026 à 21:09" in listed and "15/06/2026 à 10:30" in listed
    reply = text(julie.get(f"/courrier/{box}/ecrire?reponse={winter}&dossier=INBOX"))
    assert "Le 03/12/2026 à 21:09, marie.martin@mss.test a écrit :" in reply  # UTC+1
    reply = text(julie.get(f"/courrier/{box}/ecrire?reponse={summer}&dossier=INBOX"))
    assert "Le 15/06/2026 à 10:30, marie.martin@mss.test a écrit :" in reply  # UTC+2
    forward = text(julie.get(f"/courrier/{box}/ecrire?transfert={winter}&dossier=INBOX"))
    assert "Date : 03/12/2026 à 21:09" in forward
    assert "20:09" not in reply + forward
