"""Mes contacts (issue #17) through Flask's test client: add (trust-space addresses only),
edit, groups, suggestions merged with the directory, "Ajouter aux contacts" (idempotent),
vCard export and import (with hostile files), another account's ids, CSRF."""

from __future__ import annotations

import html
import re

import pytest
import vobject
from sqlalchemy import select

from tests.webmail_helpers import Web, login, post, token
from trust_space.models import Operator, TrustedDomain
from webmail.contacts.models import Contact, ContactGroup

pytest_plugins = ["tests.webmail_fixtures"]
PEER = "autre.test"


@pytest.fixture(autouse=True)
def _clean(web: Web) -> None:
    with web.space.db.transaction() as db:
        for model in (ContactGroup, Contact):
            for row in db.scalars(select(model)):
                db.delete(row)
        if db.scalar(select(TrustedDomain).where(TrustedDomain.domain == PEER)) is None:
            operator = Operator(name="Autre opérateur", certificate_dn="CN=relais.autre.test")
            db.add(operator)
            db.flush()
            db.add(TrustedDomain(domain=PEER, operator_id=operator.id,
                                 certificate_dn="CN=relais.autre.test"))


def _marie(web: Web):  # type: ignore[no-untyped-def]
    client = web.client()
    login(web, client, "marie")
    return client


def _add(client, **data):  # type: ignore[no-untyped-def]
    return post(client, "/contacts", data)


def _ids(web: Web) -> dict[str, int]:
    with web.space.db.transaction() as db:
        return {c.address: c.id for c in db.scalars(select(Contact))}


def test_only_trust_space_addresses_are_kept(web: Web) -> None:
    marie = _marie(web)
    assert _add(marie, name="Paul", address="Paul.Durand@MSS.test").status_code == 302
    assert _add(marie, name="Confrère", address="jean@autre.test").status_code == 302
    outside = _add(marie, name="Gmail", address="someone@gmail.com")
    assert outside.status_code == 400
    page = html.unescape(outside.get_data(as_text=True))
    assert "Destinataire hors de l'espace de confiance MSSanté" in page
    assert 'value="someone@gmail.com"' in page  # what was typed is kept
    unknown = _add(marie, address="nobody@mss.test")
    assert unknown.status_code == 400 and "inconnu" in unknown.get_data(as_text=True).lower()
    for bad in ("pas une adresse", "a@b@c", "a@mss.test, b@mss.test", "x" * 300 + "@mss.test",
                "paul.durand@mss.test\r\nBcc: x@y"):
        assert _add(marie, address=bad).status_code == 400, bad
    again = _add(marie, address="paul.durand@mss.test")
    assert again.status_code == 400 and "déjà dans vos contacts" in again.get_data(as_text=True)
    assert set(_ids(web)) == {"paul.durand@mss.test", "jean@autre.test"}
    listing = marie.get("/contacts").get_data(as_text=True)
    assert "Paul" in listing and "jean@autre.test" in listing


def test_names_and_notes_are_cleaned_and_escaped(web: Web) -> None:
    marie = _marie(web)
    _add(marie, name="<script>alert(1)</script>\x00\u2028Paul", address="paul.durand@mss.test",
         note="ligne 1\r\nligne 2 <b>gras</b>" + "x" * 2000)
    with web.space.db.transaction() as db:
        row = db.scalar(select(Contact))
        assert row is not None
        assert "\x00" not in row.name and "\u2028" not in row.name
        assert row.note.startswith("ligne 1\nligne 2") and len(row.note) == 1000
    page = marie.get("/contacts").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<b>gras</b>" not in page


def test_another_accounts_contacts_and_groups_are_not_found(web: Web) -> None:
    marie = _marie(web)
    _add(marie, name="Paul", address="paul.durand@mss.test")
    post(marie, "/contacts", {"name": "Cardio"}, action="/contacts/groupes")
    pid = _ids(web)["paul.durand@mss.test"]
    with web.space.db.transaction() as db:
        gid = db.scalar(select(ContactGroup.id))
    julie = web.client()
    login(web, julie, "julie")
    assert julie.get(f"/contacts/{pid}").status_code == 404
    assert post(julie, "/contacts", {"name": "x", "address": "julie.bernard@mss.test"},
                action=f"/contacts/{pid}").status_code == 404
    gone = post(julie, "/contacts", {}, action=f"/contacts/{pid}/supprimer")
    assert gone.status_code == 302
    assert julie.get(f"/contacts/groupes/{gid}/ecrire").status_code == 404
    assert julie.get(f"/contacts?groupe={gid}").status_code == 404
    assert post(julie, "/contacts", {"name": "volé"}, action=f"/contacts/groupes/{gid}"
                ).status_code == 404
    # Julie adding her own contact into Marie's group: refused, nothing written.
    assert _add(julie, address="paul.durand@mss.test", groupe=str(gid)).status_code == 404
    assert _add(julie, address="paul.durand@mss.test", groupe="abc").status_code == 400
    with web.space.db.transaction() as db:
        assert db.scalar(select(Contact).where(Contact.id == pid)) is not None
        assert db.scalar(select(ContactGroup.name)) == "Cardio"
    assert "paul.durand" not in julie.get("/contacts").get_data(as_text=True)


def test_posts_without_the_csrf_token_are_refused(web: Web) -> None:
    marie = _marie(web)
    assert marie.post("/contacts", data={"address": "paul.durand@mss.test"}).status_code == 400
    assert marie.post("/contacts/depuis", data={"address": "paul.durand@mss.test"}
                      ).status_code == 400
    assert _ids(web) == {}


def test_groups_suggestions_and_writing_to_a_group(web: Web) -> None:
    marie = _marie(web)
    post(marie, "/contacts", {"name": "Cardiologues"}, action="/contacts/groupes")
    with web.space.db.transaction() as db:
        gid = db.scalar(select(ContactGroup.id))
    _add(marie, name="Paul Durand", address="paul.durand@mss.test", groupe=str(gid))
    _add(marie, name="Jean Confrère", address="jean@autre.test", groupe=str(gid))
    duplicate = post(marie, "/contacts", {"name": "cardiologues"}, action="/contacts/groupes")
    assert duplicate.status_code == 302
    assert "déjà un groupe" in marie.get("/contacts").get_data(as_text=True)
    found = marie.get("/annuaire/suggestions?q=cardio").get_json()
    assert found[0]["label"] == "Groupe « Cardiologues »"
    assert found[0]["address"] == "jean@autre.test, paul.durand@mss.test"
    found = marie.get("/annuaire/suggestions?q=durand").get_json()
    assert found[0]["detail"] == "Mes contacts"
    assert [f["address"] for f in found].count("paul.durand@mss.test") == 1  # not twice
    julies = web.client()
    login(web, julies, "julie")
    assert all(f.get("detail") != "Mes contacts"
               for f in julies.get("/annuaire/suggestions?q=durand").get_json())
    write = marie.get(f"/contacts/groupes/{gid}/ecrire")
    assert write.status_code == 302
    assert "a=jean@autre.test,+paul.durand@mss.test" in write.headers["Location"]
    assert post(marie, "/contacts", {}, action=f"/contacts/groupes/{gid}/supprimer"
                ).status_code == 302
    assert set(_ids(web)) == {"paul.durand@mss.test", "jean@autre.test"}  # contacts stay


def test_add_from_the_directory_twice_adds_once_and_goes_back(web: Web) -> None:
    marie = _marie(web)
    back = "/annuaire?nom=durand"
    data = {"csrf_token": token(marie, back), "address": "paul.durand@mss.test",
            "name": "Paul Durand", "suivant": back}
    first = marie.post("/contacts/depuis", data=data)
    second = marie.post("/contacts/depuis", data=data)  # a double click
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == back
    assert list(_ids(web)) == ["paul.durand@mss.test"]
    evil = marie.post("/contacts/depuis", data={**data, "suivant": "//evil.example/x"})
    assert evil.headers["Location"] == "/contacts"
    outside = marie.post("/contacts/depuis", data={**data, "address": "x@gmail.com"})
    assert outside.status_code == 302 and list(_ids(web)) == ["paul.durand@mss.test"]
    page = marie.get("/annuaire?nom=durand").get_data(as_text=True)
    assert "Ajouter aux contacts" in page


def test_vcard_export_then_import_round_trips(web: Web) -> None:
    marie = _marie(web)
    post(marie, "/contacts", {"name": "Confrères"}, action="/contacts/groupes")
    with web.space.db.transaction() as db:
        gid = db.scalar(select(ContactGroup.id))
    _add(marie, name="Paul Durand", address="paul.durand@mss.test", groupe=str(gid),
         note="Pharmacie; le matin, ça va")
    exported = marie.get("/contacts/export.vcf")
    assert exported.status_code == 200 and exported.mimetype == "text/vcard"
    assert "attachment" in exported.headers["Content-Disposition"]
    cards = list(vobject.readComponents(exported.get_data(as_text=True)))
    assert len(cards) == 1
    card = cards[0]
    assert card.fn.value == "Paul Durand" and card.email.value == "paul.durand@mss.test"
    assert card.n.value.family == "Durand" and card.n.value.given == "Paul"
    assert card.categories.value == ["Confrères"]
    assert card.note.value == "Pharmacie; le matin, ça va"
    julie = web.client()
    login(web, julie, "julie")
    answer = julie.post("/contacts/import", data={
        "csrf_token": token(julie, "/contacts"),
        "fichier": (__import__("io").BytesIO(exported.get_data()), "contacts.vcf")},
        content_type="multipart/form-data")
    assert answer.status_code == 302
    page = julie.get("/contacts").get_data(as_text=True)
    assert "1 contact ajouté" in page and "1 groupe créé" in page
    assert "Paul Durand" in page and "Confrères" in page


def _import(client, data: bytes, name: str = "c.vcf") -> str:  # type: ignore[no-untyped-def]
    import io

    client.post("/contacts/import", data={"csrf_token": token(client, "/contacts"),
                                          "fichier": (io.BytesIO(data), name)},
                content_type="multipart/form-data")
    return re.sub(r"\s+", " ", html.unescape(client.get("/contacts").get_data(as_text=True)))


def test_hostile_and_foreign_vcard_files(web: Web) -> None:
    marie = _marie(web)
    assert "pas un carnet d’adresses vCard" in _import(marie, b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "pas un carnet d’adresses vCard" in _import(marie, b"Nom;Adresse\nPaul;p@x\n")
    from webmail.contacts import book

    with web.space.db.transaction() as db, pytest.raises(book.ContactError, match="1 Mo"):
        book.import_vcard(db, 1, b"BEGIN:VCARD\r\n" + b"X" * book.MAX_IMPORT_BYTES,
                          local_domains={"mss.test"})

    # A raw body (no multipart encoding by the test client, which would spool it to a
    # temporary file it never closes): past the application's 2 MB, refused unread.
    huge = marie.post("/contacts/import", data=b"x" * (3 * 1024 * 1024),
                      content_type="multipart/form-data; boundary=frontiere")
    assert huge.status_code == 413
    assert "rien n’a été importé" in huge.get_data(as_text=True)
    mixed = (
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Paul\r\nEMAIL:paul.durand@mss.test\r\n"
        b"EMAIL:paul@gmail.com\r\nCATEGORIES:Pharmacie,Ville\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN;BROKEN\r\n\x00\x01garbage:::\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Sans adresse\r\nTEL:0600000000\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:=HYPERLINK(\"http://x\")\r\n"
        b"EMAIL:jean@autre.test\r\nNOTE:<img src=x onerror=alert(1)>\r\nEND:VCARD\r\n"
    )
    page = _import(marie, mixed)
    assert "2 contacts ajoutés" in page and "2 groupes créés" in page
    assert "1 adresse ignorée" in page and "paul@gmail.com" in page
    assert "1 fiche sans adresse" in page
    raw = marie.get("/contacts").get_data(as_text=True)
    assert "<img src=x" not in raw and "&lt;img src=x onerror=alert(1)&gt;" in raw
    assert set(_ids(web)) == {"paul.durand@mss.test", "jean@autre.test"}
    again = _import(marie, mixed)
    assert "0 contact ajouté" in again and "2 déjà présents" in again
    assert set(_ids(web)) == {"paul.durand@mss.test", "jean@autre.test"}
