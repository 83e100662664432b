"""Send / receive decisions and delegation rights, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session

from core.db import Database
from trust_space.models import (
    AccountKind,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    Operator,
    Professional,
    Role,
    TrustedDomain,
)
from trust_space.policy import (
    Identity,
    imap_acl_rights,
    may_receive,
    may_send_as,
    role_rights,
)

LOCAL = {"mss.test"}


@dataclass
class World:
    marie: Identity
    paul: Identity
    sophie: Identity
    lps: Identity
    other_lps: Identity
    webmail: Identity


def _box(s: Session, address: str, kind: MailboxKind, state: MailboxState = MailboxState.PUBLISHED,
         **kw: object) -> Mailbox:
    box = Mailbox(address=address, kind=kind, state=state, **kw)
    s.add(box)
    s.flush()
    return box


def _populate(s: Session) -> World:
    marie = Professional(rpps="10000000001", first_name="Marie", last_name="Martin")
    paul = Professional(rpps="10000000002", first_name="Paul", last_name="Durand")
    sophie = Professional(adeli="641234567", first_name="Sophie", last_name="Petit")
    s.add_all([marie, paul, sophie])
    s.flush()
    _box(s, "marie.martin@mss.test", MailboxKind.PERSONAL, professional_id=marie.id)
    _box(s, "paul.durand@mss.test", MailboxKind.PERSONAL, MailboxState.SUSPENDED,
         professional_id=paul.id)
    _box(s, "sophie.petit@mss.test", MailboxKind.PERSONAL, MailboxState.PENDING_VALIDATION,
         professional_id=sophie.id)
    _box(s, "ancien@mss.test", MailboxKind.PERSONAL, MailboxState.CLOSED, professional_id=marie.id)
    pharma = _box(s, "pharma.ducentre.64000@mss.test", MailboxKind.ORGANISATIONAL)
    closed_org = _box(s, "cabinet.ferme.64000@mss.test", MailboxKind.ORGANISATIONAL,
                      MailboxState.CLOSED)
    for pro, role in ((marie, Role.ADMINISTRATOR), (paul, Role.MANAGER), (sophie, Role.USER)):
        s.add(Delegation(mailbox_id=pharma.id, professional_id=pro.id, role=role))
    s.add(Delegation(mailbox_id=closed_org.id, professional_id=marie.id, role=Role.USER))
    lps = _box(s, "lps.cabinet.64000@mss.test", MailboxKind.APPLICATIVE)
    other = _box(s, "lps.autre.64000@mss.test", MailboxKind.APPLICATIVE)
    op = Operator(name="Pair", certificate_dn="CN=relay.pair.test,O=Pair")
    s.add(op)
    s.flush()
    s.add(TrustedDomain(domain="pair.test", operator_id=op.id, certificate_dn=op.certificate_dn))
    _box(s, "remote@pair.test", MailboxKind.PERSONAL, operator_id=op.id)
    s.flush()
    return World(
        marie=Identity(AccountKind.PROFESSIONAL, "marie.martin@mss.test", professional_id=marie.id),
        paul=Identity(AccountKind.PROFESSIONAL, "paul.durand@mss.test", professional_id=paul.id),
        sophie=Identity(AccountKind.PROFESSIONAL, "sophie.petit@mss.test",
                        professional_id=sophie.id),
        lps=Identity(AccountKind.APPLICATIVE, "lps-cabinet", mailbox_id=lps.id),
        other_lps=Identity(AccountKind.APPLICATIVE, "lps-autre", mailbox_id=other.id),
        webmail=Identity(AccountKind.SERVICE, "webmail"),
    )


def test_may_send_as(db: Database) -> None:
    with db.transaction() as s:
        w = _populate(s)
        cases = [
            (w.marie, "marie.martin@mss.test", True, "ok"),
            (w.marie, "MARIE.Martin@mss.test", True, "ok"),
            (w.paul, "marie.martin@mss.test", False, "not_owner"),
            # Someone else's suspended box: "not_owner", its state is not disclosed.
            (w.marie, "paul.durand@mss.test", False, "not_owner"),
            (w.paul, "paul.durand@mss.test", False, "mailbox_suspended"),
            (w.sophie, "sophie.petit@mss.test", False, "mailbox_not_published"),
            (w.marie, "ancien@mss.test", False, "mailbox_closed"),
            (w.marie, "pharma.ducentre.64000@mss.test", True, "ok"),
            (w.paul, "pharma.ducentre.64000@mss.test", True, "ok"),
            (w.sophie, "pharma.ducentre.64000@mss.test", True, "ok"),
            (w.lps, "pharma.ducentre.64000@mss.test", False, "not_owner"),
            (w.marie, "cabinet.ferme.64000@mss.test", False, "mailbox_closed"),
            (w.paul, "cabinet.ferme.64000@mss.test", False, "no_delegation"),
            (w.lps, "lps.cabinet.64000@mss.test", True, "ok"),
            (w.other_lps, "lps.cabinet.64000@mss.test", False, "not_bound"),
            (w.marie, "lps.cabinet.64000@mss.test", False, "not_bound"),
            (w.webmail, "marie.martin@mss.test", False, "service_account"),
            (w.marie, "inconnu@mss.test", False, "unknown_mailbox"),
            (w.marie, "remote@pair.test", False, "unknown_mailbox"),
        ]
        for identity, address, allowed, code in cases:
            decision = may_send_as(s, identity, address)
            assert (decision.allowed, decision.code) == (allowed, code), (identity.login, address)
            assert bool(decision) is allowed
            assert " / " in decision.reason  # French / English


def test_may_receive(db: Database) -> None:
    with db.transaction() as s:
        _populate(s)
        cases = [
            ("marie.martin@mss.test", True, "local"),
            ("Marie.Martin@MSS.test", True, "local"),
            ("paul.durand@mss.test", False, "mailbox_suspended"),
            ("sophie.petit@mss.test", False, "mailbox_not_published"),
            ("ancien@mss.test", False, "mailbox_closed"),
            ("inconnu@mss.test", False, "unknown_recipient"),
            ("remote@pair.test", True, "trusted_peer"),
            ("quelquun@PAIR.test", True, "trusted_peer"),
            ("someone@gmail.com", False, "untrusted_domain"),
            ("pas-une-adresse", False, "bad_address"),
            ("@mss.test", False, "bad_address"),
        ]
        for address, allowed, code in cases:
            decision = may_receive(s, address, LOCAL)
            assert (decision.allowed, decision.code) == (allowed, code), address
        refused = may_receive(s, "someone@gmail.com", LOCAL)
        assert "hors de l'espace de confiance" in refused.reason
        assert "outside the" in refused.reason


@pytest.mark.parametrize(("role", "acl"), [
    (Role.USER, "lrswip"), (Role.MANAGER, "lrswipkxte"), (Role.ADMINISTRATOR, "lrswipkxtea"),
    ("manager", "lrswipkxte"),
])
def test_imap_acl_rights(role: Role | str, acl: str) -> None:
    assert imap_acl_rights(role) == acl


def test_role_rights_are_nested() -> None:
    user, manager, admin = (role_rights(r) for r in (Role.USER, Role.MANAGER, Role.ADMINISTRATOR))
    assert {"lookup", "read", "seen", "write", "insert", "post"} == user
    assert user < manager < admin
    assert {"expunge", "delete_messages", "create", "delete_mailbox"} <= manager - user
    assert admin - manager == {"administer"}
    with pytest.raises(ValueError):
        role_rights("owner")
