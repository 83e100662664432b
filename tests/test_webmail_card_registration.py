"""Registration with a CPS card (issue #15 item 10), through the real webmail (Flask test
client, card certificates of the test trust space): the fields read from the card are
read-only in the page and kept from the card by the server (attack tests: a forged RPPS,
profession or name is refused, an omitted one is the card's); a card that already has an
account is told so at once, with the way to log in; an unregistered card at the card log-in
is offered "Créer mon compte avec cette carte"."""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from core.audit import AuditRecord
from tests.test_webmail_pages import IDENTITY
from tests.webmail_helpers import Web, post, token
from trust_space.models import Account, Mailbox, Professional

pytest_plugins = ["tests.webmail_fixtures"]
STRANGER_RPPS = "19999999999"  # the "stranger" card: valid, from the trust space's CA, no account


def _card_identity_page(web: Web, card: str):  # type: ignore[no-untyped-def]
    client = web.client(card=card)
    answer = post(client, "/inscription", {"card": "yes"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identite")
    return client


def _input(page: str, name: str) -> str:
    found = re.search(rf'<input[^>]*id="{name}"[^>]*>', page)
    assert found, name
    return found.group(0)


def test_card_fields_are_read_only_in_the_page(web: Web) -> None:
    client = _card_identity_page(web, "stranger")
    page = client.get("/inscription/identite").get_data(as_text=True)
    assert "Les champs grisés" in page and "card-fields.css" in page
    for name, value in (("last_name", "Hors"), ("first_name", "Inconnu"),
                        ("profession", "Médecin"), ("id_kind", "RPPS"),
                        ("id_number", STRANGER_RPPS)):
        tag = _input(page, name)
        assert "readonly" in tag and f'value="{value}"' in tag, tag
    assert '<select id="profession"' not in page and 'type="radio"' not in page
    assert 'class="field from-card' in page
    civility = re.search(r'<select[^>]*id="civility"[^>]*>', page)
    assert civility and "readonly" not in civility.group(0)  # the rest stays editable
    assert "lu sur la carte" in page


def _stranger_identity(**changes: str) -> dict[str, str]:
    values = {**IDENTITY, "first_name": "Inconnu", "last_name": "Hors", "profession": "Médecin",
              "id_kind": "rpps", "id_number": STRANGER_RPPS, "email": "inconnu@exemple.fr",
              "email_confirm": "inconnu@exemple.fr"}
    values.update(changes)
    return values


def test_attack_forged_card_fields_are_refused(web: Web) -> None:
    client = _card_identity_page(web, "stranger")
    for name, forged in (("id_number", "10000000077"), ("profession", "Pharmacien"),
                         ("last_name", "Martin"), ("id_kind", "adeli")):
        values = _stranger_identity(**{name: forged})
        if name == "id_kind":
            values["id_number"] = "640000099"
        answer = post(client, "/inscription/identite", values)
        page = answer.get_data(as_text=True)
        assert answer.status_code == 400, name
        assert "lue sur votre carte CPS : elle ne peut pas être modifiée" in page, name
        assert f'value="{STRANGER_RPPS}"' in page  # the card's value is shown back
    assert "identity" not in _session(client)
    with web.space.db.transaction() as session:
        assert session.scalar(select(Professional).where(
            Professional.rpps == "10000000077")) is None


def _session(client) -> dict:  # type: ignore[no-untyped-def]
    with client.session_transaction() as sess:
        return dict(sess.get("registration") or {})


def test_card_registration_keeps_the_card_values(web: Web, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Omitted card fields are the card's; the wizard ends with the card's RPPS."""
    client = _card_identity_page(web, "stranger")
    values = _stranger_identity()
    for name in ("first_name", "last_name", "profession", "id_kind", "id_number"):
        values.pop(name)
    answer = post(client, "/inscription/identite", values)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identifiant")
    assert _session(client)["identity"]["id_number"] == STRANGER_RPPS
    post(client, "/inscription/identifiant", {"password": "Carte-Pass1", "confirm": "Carte-Pass1"})
    assert post(client, "/inscription/adresse", {"cgu": "y"}).status_code == 302
    with web.space.db.transaction() as session:
        pro = session.scalar(select(Professional).where(Professional.rpps == STRANGER_RPPS))
        assert pro is not None and pro.last_name == "Hors" and pro.profession == "Médecin"
        box = session.scalar(select(Mailbox).where(Mailbox.professional_id == pro.id))
        assert box is not None and box.address == "inconnu.hors@mss.test"
        # Leave the card unregistered for the other tests of this module.
        session.execute(delete(Account).where(Account.professional_id == pro.id))
        session.execute(delete(Mailbox).where(Mailbox.professional_id == pro.id))
        session.execute(delete(Professional).where(Professional.id == pro.id))


def test_registered_card_is_told_at_once(web: Web) -> None:
    client = web.client(card="marie")
    answer = post(client, "/inscription", {"card": "yes"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 409
    assert "Un compte existe déjà pour cette carte" in page
    assert 'action="/connexion/carte"' in page and "Me connecter avec ma carte CPS" in page
    assert 'name="email"' not in page and "Vos données personnelles" not in page
    assert client.get("/inscription/identite").headers["Location"].endswith("/inscription")
    # The button on that page logs the holder in with the card.
    login = client.post("/connexion/carte", data={"csrf_token": token(client, "/connexion")})
    assert login.status_code == 302 and login.headers["Location"].startswith("/courrier/")


def test_unregistered_card_at_login_is_offered_registration(web: Web) -> None:
    client = web.client(card="stranger")
    answer = client.post("/connexion/carte", data={"csrf_token": token(client, "/connexion")})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 403
    assert "Aucun compte de messagerie n&#39;est associé à cette carte" in page
    assert "Créer mon compte avec cette carte" in page
    form = re.search(r'<form method="post" action="/inscription"[^>]*>(.*?)</form>', page,
                     re.S)
    assert form and 'name="card" value="yes"' in form.group(1)
    assert 'name="csrf_token"' in form.group(1)
    with web.space.db.transaction() as session:
        last = session.scalars(select(AuditRecord).where(AuditRecord.action == "login.card")
                               .order_by(AuditRecord.id.desc())).first()
        assert last is not None and last.outcome == "card_not_registered"
    # The button leads straight to the identity step, read from the card.
    answer = client.post("/inscription", data={"csrf_token": form.group(1).split(
        'name="csrf_token" value="')[1].split('"')[0], "card": "yes"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/identite")
    assert STRANGER_RPPS in client.get("/inscription/identite").get_data(as_text=True)


def test_other_card_refusals_offer_no_registration(web: Web) -> None:
    for card in ("revoked", None):
        client = web.client(card=card)
        answer = client.post("/connexion/carte",
                             data={"csrf_token": token(client, "/connexion")})
        assert answer.status_code == 403
        assert "Créer mon compte avec cette carte" not in answer.get_data(as_text=True)
