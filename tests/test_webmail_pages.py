"""Webmail pages through Flask's test client: role enforcement on organisational mailboxes,
operator pages, the registration wizard and Mon compte."""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import select

from tests.webmail_helpers import OPERATOR, PASSWORD, Web, login, login_operator, post
from trust_space import directory
from trust_space.models import Account, Delegation, Mailbox, MailboxState, OtpChannel, Role
from webmail.auth import otp

pytest_plugins = ["tests.webmail_fixtures"]
ORG = "pharma.ducentre.64000@mss.test"


def _org_id(web: Web) -> int:
    with web.space.db.transaction() as session:
        return session.scalar(select(Mailbox.id).where(Mailbox.address == ORG))  # type: ignore[return-value]


def _pro_id(web: Web, address: str) -> int:
    with web.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == address))
        return box.professional_id  # type: ignore[union-attr,return-value]


def _roles(web: Web) -> dict[str, Role]:
    with web.space.db.transaction() as session:
        rows = session.scalars(select(Delegation).join(Mailbox).where(Mailbox.address == ORG))
        return {d.professional.first_name: d.role for d in rows}


def test_roles_are_enforced_on_every_org_action(web: Web) -> None:
    org, marie = _org_id(web), _pro_id(web, "marie.martin@mss.test")
    julie = web.client()
    login(web, julie, "julie")
    page = julie.get(f"/organisations/{org}").get_data(as_text=True)
    assert "Julie Bernard" in page and "Ajouter un collaborateur" not in page
    form = f"/organisations/{org}"
    refused = [
        post(julie, form, {"address": "marie.martin@mss.test", "role": "administrator"},
             action=f"/organisations/{org}/collaborateurs"),
        post(julie, form, {"role": "administrator"},
             action=f"/organisations/{org}/collaborateurs/{_pro_id(web, 'julie.bernard@mss.test')}"
                    "/role"),
        post(julie, form, {"confirmer": "oui"}, action=f"/organisations/{org}/collaborateurs/"
                                                     f"{_pro_id(web, 'paul.durand@mss.test')}"
                                                     "/retirer"),
        julie.get(f"/organisations/{org}/collaborateurs/"
                  f"{_pro_id(web, 'paul.durand@mss.test')}/retirer"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert _roles(web) == {"Paul": Role.ADMINISTRATOR, "Julie": Role.USER}
    stranger = web.client()
    login(web, stranger, "marie")
    assert stranger.get(f"/organisations/{org}").status_code == 404
    assert post(stranger, "/organisations", {"address": "marie.martin@mss.test", "role": "user"},
                action=f"/organisations/{org}/collaborateurs").status_code == 404
    assert web.acl_syncs == []
    del marie


def test_administrator_manages_collaborators_but_stays(web: Web) -> None:
    org, paul_id = _org_id(web), _pro_id(web, "paul.durand@mss.test")
    paul = web.client()
    login(web, paul, "paul")
    page = paul.get(f"/organisations/{org}?q=martin").get_data(as_text=True)
    assert "marie.martin@mss.test" in page
    answer = post(paul, f"/organisations/{org}", {"address": "marie.martin@mss.test",
                                                  "role": "manager"},
                  action=f"/organisations/{org}/collaborateurs")
    assert answer.status_code == 302 and _roles(web)["Marie"] is Role.MANAGER
    assert web.acl_syncs == [1]
    # Issue #15 item 9: the last administrator is told why on the page, not a bare 409.
    leave = post(paul, f"/organisations/{org}", {"confirmer": "oui"},
                 action=f"/organisations/{org}/collaborateurs/{paul_id}/retirer")
    assert leave.status_code == 302
    shown = paul.get(leave.headers["Location"]).get_data(as_text=True)
    assert "au moins un administrateur" in shown and "Code 409" not in shown
    demote = post(paul, f"/organisations/{org}", {"role": "user"},
                  action=f"/organisations/{org}/collaborateurs/{paul_id}/role")
    assert demote.status_code == 302
    assert "au moins un administrateur" in paul.get(demote.headers["Location"]).get_data(
        as_text=True)
    assert _roles(web)["Paul"] is Role.ADMINISTRATOR
    marie_id = _pro_id(web, "marie.martin@mss.test")
    # Removing asks for a confirmation first: without it, nothing changes.
    ask = post(paul, f"/organisations/{org}", {},
               action=f"/organisations/{org}/collaborateurs/{marie_id}/retirer")
    assert ask.status_code == 302 and ask.headers["Location"].endswith("/retirer")
    assert "Marie" in _roles(web)
    confirm = paul.get(ask.headers["Location"]).get_data(as_text=True)
    assert "Retirer Marie Martin ?" in confirm and "Retirer l’accès" in confirm
    assert post(paul, f"/organisations/{org}", {"confirmer": "oui"},
                action=f"/organisations/{org}/collaborateurs/{marie_id}/retirer"
                ).status_code == 302
    assert "Marie" not in _roles(web) and len(web.acl_syncs) == 2


def test_operator_pages_are_for_operators_only(web: Web) -> None:
    marie = web.client()
    login(web, marie)
    assert marie.get("/operateur/inscriptions").status_code == 403
    assert "/operateur/inscriptions" not in marie.get("/compte").get_data(as_text=True)
    assert web.client().get("/operateur/inscriptions").status_code == 302


IDENTITY = {
    "civility": "Dr", "last_name": "Martin", "first_name": "Marie", "email": "marie2@exemple.fr",
    "email_confirm": "marie2@exemple.fr", "place_of_practice": "Cabinet des Halles",
    "birth_day": "12", "birth_month": "3", "profession": "Pharmacien", "id_kind": "rpps",
    "id_number": "10000000077", "specialty": "Officine", "address": "2 rue des Halles",
    "postal_code": "64000", "city": "Pau", "phone": "", "mobile": "06 11 22 33 44",
}


def test_registration_wizard_then_operator_validation(web: Web, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import webmail.operator.decision

    monkeypatch.setattr(webmail.operator.decision, "certificate_issuer", lambda s: None)
    client = web.client()
    assert post(client, "/inscription", {"card": "no"}).status_code == 302
    bad = post(client, "/inscription/identite", {**IDENTITY, "id_number": "123",
                                                 "mobile": "", "email_confirm": "x@y.fr"})
    page = bad.get_data(as_text=True)
    assert bad.status_code == 400
    assert "Le numéro RPPS comporte 11 chiffres." in page
    assert "Indiquez au moins un numéro" in page and "ne sont pas identiques" in page
    assert 'value="Cabinet des Halles"' in page  # nothing typed is lost
    assert post(client, "/inscription/identite", IDENTITY).status_code == 302
    # No card: the code e-mailed to the usual address proves who registers (issue #14).
    assert client.get("/inscription/identifiant").headers["Location"].endswith("/verification")
    code = web.mailer.last_code("marie2@exemple.fr")
    assert post(client, "/inscription/verification", {"code": code}).status_code == 302
    assert "marie.martin2@mss.test" in client.get("/inscription/identifiant").get_data(
        as_text=True)  # naming collision with the existing Marie Martin
    weak = post(client, "/inscription/identifiant", {"password": "faible", "confirm": "faible"})
    assert weak.status_code == 400 and "au moins 8 caractères" in weak.get_data(as_text=True)
    assert post(client, "/inscription/identifiant",
                {"password": "Nouveau-Pass1", "confirm": "Nouveau-Pass1"}).status_code == 302
    no_cgu = post(client, "/inscription/adresse", {})
    assert no_cgu.status_code == 400 and "conditions générales" in no_cgu.get_data(as_text=True)
    done = post(client, "/inscription/adresse", {
        "cgu": "y", "pharmacy": "y", "pharmacy_name": "du Centre", "finess": "640000099",
        "pharmacy_postal_code": "64000", "pharmacy_city": "Pau"})
    assert done.status_code == 302
    page = client.get("/inscription/terminee").get_data(as_text=True)
    assert "marie.martin2@mss.test" in page and "pharma.ducentre2.64000@mss.test" in page
    assert web.mailer.sent[-1][0] == "marie2@exemple.fr"
    refused = post(web.client(), "/connexion", {"identifier": "marie.martin2@mss.test",
                                                "password": "Nouveau-Pass1"})
    assert refused.status_code == 401 and "attente de validation" in refused.get_data(
        as_text=True)
    operator = web.client()
    login_operator(web, operator)
    assert "marie.martin2@mss.test" in operator.get("/operateur/inscriptions").get_data(
        as_text=True)
    assert post(operator, "/operateur/inscriptions",
                {"address": "marie.martin2@mss.test", "decision": "validate"},
                action="/operateur/inscriptions/decision").status_code == 302
    with web.space.db.transaction() as session:
        states = dict(session.execute(select(Mailbox.address, Mailbox.state).where(
            Mailbox.address.in_(["marie.martin2@mss.test", "pharma.ducentre2.64000@mss.test"]))
        ).all())
    assert set(states.values()) == {MailboxState.PUBLISHED}
    assert web.mailer.sent[-1][0] == "marie2@exemple.fr"


def test_preferences_password_and_totp_enrolment(web: Web) -> None:
    client = web.client()
    login(web, client, "julie")
    answer = post(client, "/compte/preferences", {
        "notify": "y", "usual_email": "julie@exemple.fr", "liste_rouge": "y"})
    assert answer.status_code == 302
    with web.space.db.transaction() as session:
        found = directory.search(session, name="Bernard")
    assert all(e.address != "julie.bernard@mss.test" for e in found)
    post(client, "/compte/preferences", {"usual_email": "julie@exemple.fr"})
    with web.space.db.transaction() as session:
        assert any(e.address == "julie.bernard@mss.test"
                   for e in directory.search(session, name="Bernard"))
    wrong = post(client, "/compte/mot-de-passe", {"current": "nope", "new": "Autre-Pass1",
                                                   "confirm": "Autre-Pass1"})
    assert "actuel est incorrect" in wrong.get_data(as_text=True)
    client.get("/compte/code/application")
    qr = client.get("/compte/code/application/qr.svg")
    assert qr.mimetype == "image/svg+xml"
    page = client.get("/compte/code/application").get_data(as_text=True)
    seed = page.split('id="totp-secret">')[1].split("<")[0]
    # Issue #15 item 1: changing the channel asks for the password again.
    refused = post(client, "/compte/code/application", {"code": pyotp.TOTP(seed).now()})
    assert refused.status_code == 200 and "Mot de passe incorrect" in refused.get_data(
        as_text=True)
    assert post(client, "/compte/code/application",
                {"code": pyotp.TOTP(seed).now(), "password": PASSWORD}).status_code == 302
    with web.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == "julie.bernard@mss.test"))
        assert account.otp_channel is OtpChannel.TOTP and seed not in (account.totp_secret or "")
        assert otp.open_seed(account.totp_secret or "", web.space.settings.secret()) == seed


@pytest.mark.parametrize("path", ["/compte", "/organisations", "/operateur/inscriptions"])
def test_pages_need_a_login(web: Web, path: str) -> None:
    answer = web.client().get(path)
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/connexion")


def test_operator_login_name(web: Web) -> None:
    client = web.client()
    login_operator(web, client)
    assert OPERATOR in client.get("/compte").get_data(as_text=True)
    assert PASSWORD not in client.get("/compte").get_data(as_text=True)


def test_scripts_post_with_the_pages_csrf_token_header(web: Web) -> None:
    """js/http.js's contract: a logged-in page carries its CSRF token in a meta element, a POST
    with only the X-CSRFToken header passes, without it (or with another session's) it does not;
    a signed-out page sets no token."""
    import re

    marie = web.client()
    assert 'name="csrf-token"' not in marie.get("/connexion").get_data(as_text=True)
    login(web, marie, "marie")
    page = marie.get("/compte").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert token is not None
    other = web.client()  # another session (of the same person: earlier tests of this
    login(web, other, "marie")  # module move Julie and Paul to other code channels)
    julies = re.search(r'<meta name="csrf-token" content="([^"]+)"',
                       other.get("/compte").get_data(as_text=True))
    assert julies is not None
    assert marie.post("/deconnexion").status_code == 400
    assert marie.post("/deconnexion", headers={"X-CSRFToken": julies.group(1)}).status_code == 400
    assert marie.get("/compte").status_code == 200  # still signed in
    out = marie.post("/deconnexion", headers={"X-CSRFToken": token.group(1)})
    assert out.status_code in (302, 303)
    assert marie.get("/compte").status_code in (302, 303)
