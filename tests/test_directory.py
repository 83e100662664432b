"""Directory search, publication life cycle, professionals and delegations."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from trust_space.directory import (
    add_delegation,
    change_state,
    close,
    new_organisational_mailbox,
    new_personal_mailbox,
    publish,
    remove_delegation,
    search,
    suspend,
    upsert_professional,
    upsert_structure,
)
from trust_space.errors import InvalidTransition, NamingError, TrustSpaceError
from trust_space.models import Delegation, Mailbox, MailboxKind, MailboxState, Role

D = "mss.test"


def _directory(s: Session) -> None:
    """Published: Éloïse Lefèvre (mobile published), Marc Lefebvre, the pharmacy.
    Hidden: Luc Secret (liste rouge), Paul Attente (pending), Anne Suspendue (suspended)."""
    pharmacie, _ = upsert_structure(s, finess="640000001", name="Pharmacie du Centre",
                                    postal_code="64000", city="Pau")
    people = [
        ("10000000001", "Éloïse", "Lefèvre", "Médecin", "Cardiologie", "64000", "Pau", {}),
        ("10000000002", "Marc", "Lefebvre", "Pharmacien", "", "64100", "Bayonne", {}),
        ("10000000003", "Luc", "Secret", "Médecin", "", "64000", "Pau", {"liste_rouge": True}),
        ("10000000004", "Paul", "Attente", "Médecin", "", "64000", "Pau", {"publish": False}),
        ("10000000005", "Anne", "Suspendue", "Médecin", "", "64000", "Pau", {"suspend": True}),
    ]
    for rpps, first, last, profession, specialty, code, city, flags in people:
        pro, _ = upsert_professional(s, rpps=rpps, first_name=first, last_name=last,
                                     profession=profession, specialty=specialty,
                                     postal_code=code, city=city, mobile="06 12 34 56 78")
        box = new_personal_mailbox(s, pro, D)
        box.liste_rouge = bool(flags.get("liste_rouge"))
        box.mobile_published = first == "Éloïse"
        if flags.get("publish", True):
            publish(s, box)
        if flags.get("suspend"):
            suspend(s, box)
    org = new_organisational_mailbox(s, pharmacie, "pharma", "du Centre", D)
    publish(s, org)


def test_search(db: Database) -> None:
    with db.transaction() as s:
        _directory(s)
        def addresses(**kw: str) -> list[str]:
            return [e.address for e in search(s, **kw)]  # type: ignore[arg-type]

        assert addresses() == ["eloise.lefevre@mss.test", "marc.lefebvre@mss.test",
                               "pharma.ducentre.64000@mss.test"]
        assert addresses(name="LEFEVRE") == ["eloise.lefevre@mss.test"]
        assert addresses(name="éloise lefèvre") == ["eloise.lefevre@mss.test"]
        assert addresses(name="lefe") == ["eloise.lefevre@mss.test", "marc.lefebvre@mss.test"]
        assert addresses(name="centre") == ["pharma.ducentre.64000@mss.test"]
        assert addresses(profession="medecin") == ["eloise.lefevre@mss.test"]
        assert addresses(specialty="cardio") == ["eloise.lefevre@mss.test"]
        assert addresses(postal_code="641") == ["marc.lefebvre@mss.test"]
        assert addresses(city="pau") == ["eloise.lefevre@mss.test",
                                         "pharma.ducentre.64000@mss.test"]
        assert addresses(rpps="10000000002") == ["marc.lefebvre@mss.test"]
        assert addresses(text="pharmacien bayonne") == ["marc.lefebvre@mss.test"]
        assert addresses(name="dupont") == []
        assert len(search(s, limit=1)) == 1
        assert [e.address for e in search(s, kind=MailboxKind.ORGANISATIONAL)] == \
            ["pharma.ducentre.64000@mss.test"]
        # Liste rouge, pending and suspended mailboxes are never returned, whatever the query.
        for kw in ({"name": "secret"}, {"name": "attente"}, {"name": "suspendue"},
                   {"rpps": "10000000003"}, {"rpps": "10000000004"}, {"text": "luc"}):
            assert search(s, **kw) == [], kw  # type: ignore[arg-type]
        entries = {e.address: e for e in search(s)}
        eloise = entries["eloise.lefevre@mss.test"]
        assert eloise.mobile == "06 12 34 56 78" and eloise.display_name == "Éloïse Lefèvre"
        assert (eloise.profession, eloise.city, eloise.rpps) == ("Médecin", "Pau", "10000000001")
        assert entries["marc.lefebvre@mss.test"].mobile is None  # not published
        pharma = entries["pharma.ducentre.64000@mss.test"]
        assert (pharma.kind, pharma.structure, pharma.finess, pharma.postal_code) == \
            (MailboxKind.ORGANISATIONAL, "Pharmacie du Centre", "640000001", "64000")


def test_state_transitions(db: Database) -> None:
    with db.transaction() as s:
        pro, _ = upsert_professional(s, rpps="10000000001", first_name="Marie",
                                     last_name="Martin")
        box = new_personal_mailbox(s, pro, D)
        assert box.state is MailboxState.PENDING_VALIDATION
        with pytest.raises(InvalidTransition, match="en attente de validation"):
            suspend(s, box)
        publish(s, box)
        first_published = box.published_at
        assert first_published is not None
        with pytest.raises(InvalidTransition):
            publish(s, box)
        suspend(s, box)
        publish(s, box)
        assert box.published_at == first_published
        close(s, box)
        for step in (publish, suspend, close):
            with pytest.raises(InvalidTransition, match="fermée"):
                step(s, box)
        other = new_personal_mailbox(s, pro, D)
        assert other.address == "marie.martin2@mss.test"  # the closed one keeps its name
        change_state(s, other, MailboxState.CLOSED)
    with db.transaction() as s:
        states = {a: st for a, st in s.execute(select(Mailbox.address, Mailbox.state))}
        assert states == {"marie.martin@mss.test": MailboxState.CLOSED,
                          "marie.martin2@mss.test": MailboxState.CLOSED}


def test_upserts_and_delegations(db: Database) -> None:
    with db.transaction() as s:
        pro, created = upsert_professional(s, rpps="10000000001", first_name="Marie",
                                           last_name="Martin", profession="Médecin")
        assert created
        same, created = upsert_professional(s, rpps="10000000001", adeli="641234567",
                                            first_name="Marie", last_name="Martin-Durand")
        assert same is pro and not created and pro.last_name == "Martin-Durand"
        assert upsert_professional(s, adeli="641234567", first_name="M", last_name="M")[0] is pro
        upsert_professional(s, adeli="649999999", first_name="Paul", last_name="Petit")
        with pytest.raises(TrustSpaceError, match="déjà attribué"):
            upsert_professional(s, rpps="10000000001", adeli="649999999",
                                first_name="X", last_name="Y")
        with pytest.raises(NamingError):
            upsert_professional(s, first_name="Sans", last_name="Numéro")
        with pytest.raises(TrustSpaceError, match="inconnu"):
            upsert_professional(s, rpps="10000000001", shoe_size=42)
        org, _ = upsert_structure(s, finess="640000001", name="Pharmacie du Centre",
                                  postal_code="64000")
        box = new_organisational_mailbox(s, org, "pharma", "du Centre", D)
        add_delegation(s, box, pro, Role.USER)
        add_delegation(s, box, pro, "manager")
        roles = s.execute(select(Delegation.role)).scalars().all()
        assert roles == [Role.MANAGER]
        personal = new_personal_mailbox(s, pro, D)
        with pytest.raises(TrustSpaceError, match="organisationnelle"):
            add_delegation(s, personal, pro, Role.USER)
        assert remove_delegation(s, box, pro)
        assert not remove_delegation(s, box, pro)
    with db.transaction() as s:
        assert s.execute(select(Delegation)).first() is None
