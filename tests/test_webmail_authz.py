"""Authorisation matrix of the mail views: for every route that takes a mailbox or message id,
the owner, each delegation role (administrator, manager, user), a stranger and an anonymous
visitor. Nobody reads or changes another mailbox by guessing ids or URLs (403/404, and the
store is unchanged, checked through IMAP); every POST needs its CSRF token.

Real Dovecot and gateway on loopback (``tests.webmail_mail_fixtures``).
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD
from tests.webmail_helpers import Web
from tests.webmail_mail_helpers import address, box_id, clinical_message, wait_until

pytest_plugins = ["tests.webmail_mail_fixtures"]
ORG = address("org")
SHARED = f"shared/{ORG}"
SUBJECT = "Compte rendu confidentiel"
HTML = "<p>Compte rendu <b>confidentiel</b></p>"

# (method, path, form data, right needed); {box} {uid} {trash} {part} {member} are filled in.
ROUTES: list[tuple[str, str, dict[str, str] | None, str]] = [
    ("GET", "/courrier/{box}?dossier=INBOX", None, "read"),
    ("GET", "/courrier/{box}?dossier=Trash", None, "read"),
    ("GET", "/courrier/{box}/dossiers", None, "read"),
    ("GET", "/courrier/{box}/message/{uid}?dossier=INBOX", None, "read"),
    ("GET", "/courrier/{box}/message/{uid}/corps?dossier=INBOX", None, "read"),
    ("GET", "/courrier/{box}/message/{uid}/piece/{part}?dossier=INBOX", None, "read"),
    ("GET", "/courrier/{box}/message/{uid}/piece/{part}/document/{member}?dossier=INBOX", None,
     "read"),
    ("GET", "/courrier/{box}/recherche?q=compte&portee=tous", None, "read"),
    ("GET", "/courrier/{box}/ecrire", None, "send"),
    ("GET", "/courrier/{box}/ecrire?reponse={uid}&dossier=INBOX", None, "send"),
    ("GET", "/courrier/{box}/ecrire?transfert={uid}&dossier=INBOX", None, "send"),
    ("GET", "/courrier/{box}/corbeille/vider", None, "delete"),
    ("POST", "/courrier/{box}/marquer", {"dossier": "INBOX", "uid": "{uid}", "etat": "non-lu"},
     "flag"),
    ("POST", "/courrier/{box}/deplacer", {"dossier": "INBOX", "uid": "{uid}", "cible": "Trash"},
     "delete"),
    ("POST", "/courrier/{box}/supprimer", {"dossier": "INBOX", "uid": "{uid}"}, "delete"),
    ("POST", "/courrier/{box}/supprimer", {"dossier": "Trash", "uid": "{trash}"}, "delete"),
    ("POST", "/courrier/{box}/restaurer", {"dossier": "Trash", "uid": "{trash}"}, "delete"),
    ("POST", "/courrier/{box}/corbeille/vider", {"dossier": "Trash", "confirmer": "oui"},
     "delete"),
    ("POST", "/courrier/{box}/dossiers", {"operation": "create", "nom": "Pirate"}, "folders"),
    ("POST", "/courrier/{box}/dossiers", {"operation": "delete", "dossier": "Archives"},
     "folders"),
    ("POST", "/courrier/{box}/dossiers",
     {"operation": "rename", "dossier": "Archives", "nom": "Vol"}, "folders"),
    ("POST", "/courrier/{box}/ecrire", {"action": "envoyer", "to": "leo.faure@mss.test",
                                        "subject": "x", "body": "x"}, "send"),
    ("POST", "/courrier/{box}/ecrire", {"action": "brouillon", "to": "", "subject": "x",
                                        "body": "x"}, "draft"),
    ("POST", "/courrier/{box}/ecrire", {"action": "envoyer", "transfert": "",
                                        "source_folder": "INBOX", "source_uid": "{uid}",
                                        "keep": "{part}", "to": "leo.faure@mss.test",
                                        "subject": "x", "body": "x"}, "send"),
    ("POST", "/courrier/{box}/message/{uid}/accuse", {"dossier": "INBOX", "reponse": "envoyer"},
     "send"),
]
# What a role may do in the Pharmacie du Centre mailbox (same table as the IMAP ACLs).
ROLE_RIGHTS = {"paul": {"read", "flag", "draft", "send", "delete", "folders"},
               "emma": {"read", "flag", "draft", "send", "delete", "folders"},
               "julie": {"read", "flag", "draft", "send"}}


# ---------------------------------------------------------------------- the store, seen by IMAP
def _imap(op: Operator, who: str) -> imaplib.IMAP4_SSL:
    conn = op.space.imaps()
    conn.login(address(who), PASSWORD)
    return conn


def _snapshot(op: Operator) -> dict[str, Any]:
    """Every folder of Marie's and of the pharmacy's mailbox: its messages and their flags."""
    state: dict[str, Any] = {}
    for who, prefix in (("marie", ""), ("paul", SHARED)):
        conn = _imap(op, who)
        try:
            _typ, listed = conn.list('""', f"{prefix}*" if prefix else "*")
            for line in listed:
                name = line.decode().rsplit(' "/" ', 1)[-1].strip('"')  # type: ignore[union-attr]
                if prefix and not name.startswith(prefix) or not prefix and \
                        name.startswith("shared"):
                    continue
                if conn.select(f'"{name}"', readonly=True)[0] != "OK":
                    continue
                _typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
                state[f"{who}:{name}"] = sorted(str(d) for d in data if d)
        finally:
            conn.logout()
    return state


def _seed(op: Operator) -> None:
    """Mail in Marie's and the pharmacy's mailboxes (INBOX and Corbeille), one user folder
    "Archives" in each."""
    for subject in (SUBJECT, SUBJECT + " (2)"):
        op.submit(address("paul"), [address("marie"), ORG],
                  clinical_message(address("paul"), [address("marie"), ORG], subject, html=HTML))
    wait_until(lambda: len(op.messages(address("marie"))) >= 2)
    wait_until(lambda: len(op.messages(address("paul"), f'"{SHARED}/INBOX"')) >= 2)
    for who, prefix in (("marie", ""), ("paul", f"{SHARED}/")):
        conn = _imap(op, who)
        conn.create(f'"{prefix}Archives"')
        conn.select(f'"{prefix}INBOX"')
        assert conn.uid("MOVE", "2", f'"{prefix}Trash"')[0] == "OK"
        conn.logout()


@pytest.fixture(scope="module")
def world(mail_operator: Operator, mail_web: Web) -> dict[str, Any]:
    _seed(mail_operator)
    return {"M": box_id(mail_web, address("marie")), "O": box_id(mail_web, ORG),
            "uid": 1, "trash": 1}


def _ids(client: FlaskClient, world: dict[str, Any], box: str) -> dict[str, str]:
    """Route parameters, the attachment numbers read from the owner's page."""
    page = client.get(f"/courrier/{world[box]}/message/1?dossier=INBOX").get_data(as_text=True)
    part = re.search(r"/piece/(\d+)\?", page)
    member = re.search(r"/document/(\d+)\?", page)
    assert part and member, page[:2000]
    return {"box": str(world[box]), "uid": "1", "trash": "1", "part": part.group(1),
            "member": member.group(1)}


def _token(client: FlaskClient) -> str:
    page = client.get("/compte").get_data(as_text=True)
    if "csrf_token" not in page:
        page = client.get("/connexion").get_data(as_text=True)
    found = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', page)
    assert found
    return found.group(1)


def _call(client: FlaskClient, route: tuple[str, str, dict[str, str] | None, str],
          ids: dict[str, str], *, csrf: bool = True) -> Any:
    method, path, data, _right = route
    url = path.format(**ids)
    if method == "GET":
        return client.get(url)
    form = {k: v.format(**ids) for k, v in (data or {}).items()}
    if csrf:
        form["csrf_token"] = _token(client)
    return client.post(url, data=form)


# ---------------------------------------------------------------------- the matrix
def test_strangers_and_roles_cannot_reach_beyond_their_rights(
        mail_operator: Operator, world: dict[str, Any],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie, paul = as_user("marie"), as_user("paul")
    ids = {"M": _ids(marie, world, "M"), "O": _ids(paul, world, "O")}
    before = _snapshot(mail_operator)
    cases: list[tuple[str, str, int]] = [  # actor, mailbox, expected status when refused
        ("paul", "M", 404), ("julie", "M", 404), ("emma", "M", 404), ("leo", "M", 404),
        ("marie", "O", 404), ("leo", "O", 404), ("julie", "O", 403)]
    clients = {"marie": marie, "paul": paul}
    for who, box, status in cases:
        client = clients.get(who) or clients.setdefault(who, as_user(who))
        for route in ROUTES:
            if who == "julie" and route[3] in ROLE_RIGHTS["julie"]:
                continue  # allowed: see the next test
            answer = _call(client, route, ids[box])
            assert answer.status_code == status, (who, box, route, answer.status_code)
            assert SUBJECT not in answer.get_data(as_text=True), (who, box, route)
    assert _snapshot(mail_operator) == before


def test_owner_and_each_role_may_do_what_their_role_allows(
        mail_operator: Operator, world: dict[str, Any],
        as_user: Callable[[str], FlaskClient]) -> None:
    owner = as_user("marie")
    ids = {"M": _ids(owner, world, "M")}
    actors = [("marie", "M", ROLE_RIGHTS["paul"])]
    actors += [(who, "O", rights) for who, rights in ROLE_RIGHTS.items()]
    for who, box, rights in actors:
        client = owner if who == "marie" else as_user(who)
        ids.setdefault(box, _ids(client, world, box))
        for route in _harmless(ROUTES):
            if route[3] not in rights:
                continue
            answer = _call(client, route, ids[box])
            expected = (200,) if route[0] == "GET" else (302, 422)
            assert answer.status_code in expected, (who, box, route, answer.status_code)


def _harmless(routes: list[Any]) -> list[Any]:
    """The same routes with requests that pass authorisation but change nothing important
    (no selection, no confirmation, an invalid folder name, no recipient)."""
    out = []
    for method, path, data, right in routes:
        if method == "POST" and data is not None:
            data = {k: v for k, v in data.items() if k not in ("uid", "confirmer", "to", "nom")}
            if "reponse" in data:
                data["reponse"] = "ignorer"
        out.append((method, path, data, right))
    return out


def test_guessed_folders_and_ids_stay_inside_the_mailbox(
        mail_operator: Operator, world: dict[str, Any],
        as_user: Callable[[str], FlaskClient]) -> None:
    julie = as_user("julie")
    own = box_id_of(julie, world)
    before = _snapshot(mail_operator)
    guesses = [
        f"/courrier/{own}?dossier={SHARED}/INBOX",
        f"/courrier/{own}?dossier=shared/{address('marie')}/INBOX",
        f"/courrier/{own}/message/1?dossier={SHARED}/INBOX",
        f"/courrier/{own}/message/1?dossier=/INBOX",
        f"/courrier/{own}/message/1?dossier=INBOX/../../marie.martin",
        f"/courrier/{world['O']}/message/1?dossier=../{address('marie')}/INBOX",
        f"/courrier/{world['O']}?dossier=%2A",
        f"/courrier/{world['M'] + 1000}",
        f"/courrier/{world['O']}/message/999999?dossier=INBOX",
    ]
    for url in guesses:
        answer = julie.get(url)
        assert answer.status_code == 404, (url, answer.status_code)
        assert SUBJECT not in answer.get_data(as_text=True)
    token = _token(julie)
    answer = julie.post(f"/courrier/{own}/deplacer", data={
        "csrf_token": token, "dossier": f"{SHARED}/INBOX", "uid": "1", "cible": "Trash"})
    assert answer.status_code == 404
    answer = julie.post(f"/courrier/{world['O']}/marquer", data={
        "csrf_token": token, "dossier": "INBOX", "uid": "1", "etat": "lu",
        "retour": "https://evil.example/"})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/courrier/")
    del before


def box_id_of(client: FlaskClient, world: dict[str, Any]) -> int:
    """The personal mailbox id ``/courrier`` leads to."""
    location = client.get("/courrier").headers["Location"]
    return int(location.rstrip("/").rsplit("/", 1)[-1].split("?")[0])


def test_anonymous_visitors_are_sent_to_the_login_page(
        mail_operator: Operator, mail_web: Web, world: dict[str, Any],
        as_user: Callable[[str], FlaskClient]) -> None:
    ids = _ids(as_user("marie"), world, "M")
    before = _snapshot(mail_operator)
    anonymous = mail_web.client()
    for route in ROUTES:
        answer = _call(anonymous, route, ids)
        assert answer.status_code == 302, route
        # A page asked by GET comes back after the log-in (?next=, a local path only).
        target = urlsplit(answer.headers["Location"])
        assert target.path == "/connexion", route
        assert not target.query or parse_qs(target.query)["next"][0].startswith("/c"), route
    for path in ("/annuaire", "/annuaire/suggestions?q=mar", "/courrier", "/operateur/file"):
        assert anonymous.get(path).status_code == 302
    assert _snapshot(mail_operator) == before


def test_every_post_needs_its_csrf_token(
        mail_operator: Operator, world: dict[str, Any],
        as_user: Callable[[str], FlaskClient]) -> None:
    marie = as_user("marie")
    ids = _ids(marie, world, "M")
    before = _snapshot(mail_operator)
    for route in [r for r in ROUTES if r[0] == "POST"]:
        answer = _call(marie, route, ids, csrf=False)
        assert answer.status_code == 400, route
        assert "Formulaire expiré" in answer.get_data(as_text=True)
    operator = as_user("operator")
    for path in ("/operateur/file/abc/relancer", "/operateur/file/abc/supprimer"):
        assert operator.post(path).status_code == 400
    assert _snapshot(mail_operator) == before


def test_operator_pages_are_for_operators_only(
        world: dict[str, Any], as_user: Callable[[str], FlaskClient]) -> None:
    paul = as_user("paul")
    token = _token(paul)
    for path in ("/operateur/file", "/operateur/refus", "/operateur/pairs", "/operateur/journal",
                 "/operateur/journal.csv", "/operateur/metriques"):
        assert paul.get(path).status_code == 403, path
    for path in ("/operateur/file/abc/relancer", "/operateur/file/abc/supprimer"):
        assert paul.post(path, data={"csrf_token": token}).status_code == 403
    operator = as_user("operator")
    assert operator.get("/courrier").status_code == 403  # no mailbox of its own
    assert operator.get(f"/courrier/{world['M']}").status_code == 403
