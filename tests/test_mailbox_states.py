"""Only published mailboxes are reachable, and a change of state takes effect at once: over
IMAP (a delegate's shared namespace, a master-user log-in as the mailbox, the mailbox's own
sessions) and in the webmail (its mailbox switcher and routes), on a real Dovecot and the
Flask test client (``tests.webmail_mail_fixtures``: this module's own operator, whose people
it may suspend).

Organisational mailboxes made here are closed again at the end of each test, so that the
operator's other users see the Pharmacie du Centre only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from flask.testing import FlaskClient
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import select

from core.audit import AuditRecord
from core.db import Database
from mailstore.credentials import master_credentials
from tests.gateway_fixtures import Operator
from tests.mailstore_fixtures import PASSWORD
from tests.webmail_helpers import Web, post
from tests.webmail_mail_helpers import address, box_id, post_form, wait_until
from trust_space import directory
from trust_space.models import (
    Account,
    AccountState,
    Delegation,
    Mailbox,
    MailboxKind,
    MailboxState,
    Role,
)

pytest_plugins = ["tests.webmail_mail_fixtures"]
STATES = {"attente": MailboxState.PENDING_VALIDATION, "suspendue": MailboxState.SUSPENDED,
          "ouverte": MailboxState.PUBLISHED}


@contextmanager
def _imap(op: Operator, login: str, password: str = PASSWORD) -> Iterator[IMAPClient]:
    """A logged-in IMAP session, closed after (LOGOUT, or just its socket once kicked)."""
    client = IMAPClient("127.0.0.1", op.settings.imaps_port, ssl=True,
                        ssl_context=op.space.tls_context(), timeout=10)
    try:
        client.login(login, password)
        yield client
    finally:
        try:
            client.logout()
        except (OSError, IMAPClientError):  # kicked: only the socket is left to close
            with suppress(OSError):
                client.shutdown()


def _shared_inbox(org: str) -> str:
    return f"shared/{org}/INBOX"


def _can_select(client: IMAPClient, folder: str) -> bool:
    try:
        client.select_folder(folder, readonly=True)
    except IMAPClientError:
        return False
    return True


def _cut_off(client: IMAPClient, folder: str | None = None) -> bool:
    """True once the open session can no longer read ``folder`` (or at all)."""
    try:
        if folder is None:
            client.noop()
            return False
        return not _can_select(client, folder)
    except (OSError, IMAPClientError):  # kicked: the connection is gone (BYE)
        return True


def _set_state(db: Database, mailbox: str, target: MailboxState) -> None:
    """What the operator's decision or ``trust_space.directory`` does, from any process."""
    with db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == mailbox))
        directory.change_state(session, box, target)


@pytest.fixture
def orgs(mail_operator: Operator) -> Iterator[dict[str, str]]:
    """Three organisational mailboxes, pending / suspended / published, with Julie as user
    (``{"attente": address, …}``), and the ACLs written as after a delegation change."""
    op, tag = mail_operator, os.urandom(3).hex()
    made = {}
    with op.space.db.transaction() as session:
        julie = session.scalar(select(Mailbox).where(Mailbox.address == address("julie")))
        for name, state in STATES.items():
            box = Mailbox(address=f"pharma.{name}{tag}.64000@mss.test", state=state,
                          kind=MailboxKind.ORGANISATIONAL, display_name=f"Pharmacie {name}")
            session.add_all([box, Delegation(mailbox=box, professional=julie.professional,
                                             role=Role.USER)])
            made[name] = box.address
    op.dovecot.sync_acls()
    yield made
    for mailbox in made.values():
        _set_state(op.space.db, mailbox, MailboxState.CLOSED)
    op.dovecot.sync_acls()


def test_a_delegate_reaches_only_published_organisational_mailboxes(
        mail_operator: Operator, orgs: dict[str, str]) -> None:
    with _imap(mail_operator, address("julie")) as julie:
        listed = {name for _, _, name in julie.list_folders("shared/")}
        assert _shared_inbox(orgs["ouverte"]) in listed or f"shared/{orgs['ouverte']}" in listed
        for name in ("attente", "suspendue"):
            assert not any(orgs[name] in folder for folder in listed)
            assert not _can_select(julie, _shared_inbox(orgs[name]))
        assert _can_select(julie, _shared_inbox(orgs["ouverte"]))


def test_validation_opens_a_pending_organisational_mailbox_without_a_resync(
        mail_operator: Operator, orgs: dict[str, str]) -> None:
    """The operator validates the registration in another process (``mss account
    validate``): the mail store notices the new state on its own."""
    _set_state(mail_operator.space.db, orgs["attente"], MailboxState.PUBLISHED)

    def reachable() -> bool:
        with _imap(mail_operator, address("julie")) as julie:
            return _can_select(julie, _shared_inbox(orgs["attente"]))

    wait_until(reachable, timeout=15)


def test_suspending_an_organisational_mailbox_cuts_its_open_delegate_sessions_off(
        mail_operator: Operator, orgs: dict[str, str]) -> None:
    op, folder = mail_operator, _shared_inbox(orgs["ouverte"])
    with _imap(op, address("julie")) as julie:
        assert _can_select(julie, folder)
        _set_state(op.space.db, orgs["ouverte"], MailboxState.SUSPENDED)
        wait_until(lambda: _cut_off(julie, folder), timeout=15)
    with _imap(op, address("julie")) as again:
        assert not _can_select(again, folder)
        assert _can_select(again, "INBOX")  # her own mailbox stays hers


def test_the_master_user_cannot_open_an_unpublished_organisational_mailbox(
        mail_operator: Operator, orgs: dict[str, str]) -> None:
    creds = master_credentials(mail_operator.settings)
    for name in ("attente", "suspendue"):
        with pytest.raises(IMAPClientError), _imap(mail_operator, creds.login_for(orgs[name]),
                                                   creds.secret):
            pass
    with _imap(mail_operator, creds.login_for(orgs["ouverte"]), creds.secret) as webmail:
        assert _can_select(webmail, "INBOX")


def _switcher(client: FlaskClient) -> str:
    return client.get(f"/courrier/{_own(client)}").get_data(as_text=True)


def _own(client: FlaskClient) -> int:
    found = client.get("/")  # to the Boîte de réception of the personal mailbox
    return int(found.headers["Location"].split("/")[2].split("?")[0])


def test_the_webmail_shows_only_published_organisational_mailboxes(
        mail_web: Web, as_user: Callable[[str], FlaskClient], orgs: dict[str, str]) -> None:
    client = as_user("julie")
    page = _switcher(client)
    assert "Pharmacie ouverte" in page
    assert "Pharmacie attente" not in page and "Pharmacie suspendue" not in page
    for name in ("attente", "suspendue"):
        assert client.get(f"/courrier/{box_id(mail_web, orgs[name])}").status_code == 404
    opened = box_id(mail_web, orgs["ouverte"])
    assert client.get(f"/courrier/{opened}").status_code == 200
    _set_state(mail_web.space.db, orgs["ouverte"], MailboxState.SUSPENDED)
    assert client.get(f"/courrier/{opened}").status_code == 404  # the very next request
    assert "Pharmacie ouverte" not in _switcher(client)


@pytest.fixture
def leo(mail_operator: Operator) -> Iterator[str]:
    """Léo's personal mailbox, published again after the test, once the mail store's
    supervisor has seen it published: a round that read it suspended kicks its sessions a
    moment later, which would cut the next test's fresh sessions (seen in CI: the test after
    this fixture got BYE on its first SELECT)."""
    yield address("leo")
    with mail_operator.space.db.transaction() as session:
        box = session.scalar(select(Mailbox).where(Mailbox.address == address("leo")))
        if box.state is not MailboxState.PUBLISHED:
            directory.publish(session, box)
    # Two rounds finished after the republication: the first may have begun before it, read
    # Léo suspended and kick (at its end) sessions the next test has just opened; the second
    # began after it.
    supervisor = mail_operator.dovecot
    first = supervisor.state_rounds
    wait_until(lambda: supervisor.state_rounds >= first + 2
               and supervisor._closed is not None  # noqa: SLF001 — its last round's view
               and address("leo") not in supervisor._closed.mailboxes, timeout=20)


def test_a_suspended_personal_mailbox_is_closed_at_the_next_webmail_request(
        mail_web: Web, as_user: Callable[[str], FlaskClient], leo: str) -> None:
    client = as_user("leo")
    own = box_id(mail_web, leo)
    assert client.get(f"/courrier/{own}").status_code == 200
    _set_state(mail_web.space.db, leo, MailboxState.SUSPENDED)
    answer = client.get(f"/courrier/{own}")
    assert answer.status_code in (302, 401, 404)
    assert answer.status_code != 302 or "/connexion" in answer.headers["Location"]
    assert leo not in client.get("/compte").get_data(as_text=True)


def test_logging_in_to_a_suspended_personal_mailbox_says_it_is_suspended(
        mail_web: Web, leo: str) -> None:
    """The right password on a suspended mailbox: the page says it is suspended (it said
    « en attente de validation », which is the wrong thing to tell a professional), and no
    code is sent; a wrong password still gets the generic answer (no enumeration)."""
    _set_state(mail_web.space.db, leo, MailboxState.SUSPENDED)
    client = mail_web.client()
    page = post(client, "/connexion", {"identifier": leo, "password": PASSWORD})
    text = page.get_data(as_text=True)
    assert page.status_code != 302
    assert "suspendue par l" in text and "attente de validation" not in text
    wrong = post(mail_web.client(), "/connexion", {"identifier": leo, "password": "Faux-123456"})
    assert "suspendue" not in wrong.get_data(as_text=True)


def test_a_suspended_personal_mailbox_loses_its_open_imap_sessions(
        mail_operator: Operator, leo: str) -> None:
    op = mail_operator
    creds = master_credentials(op.settings)
    with _imap(op, leo) as session, _imap(op, creds.login_for(leo), creds.secret) as webmail:
        session.select_folder("INBOX")
        webmail.select_folder("INBOX")  # as the webmail's pooled session does
        _set_state(op.space.db, leo, MailboxState.SUSPENDED)
        wait_until(lambda: _cut_off(session) and _cut_off(webmail), timeout=15)
    with pytest.raises(IMAPClientError), _imap(op, leo):
        pass
    with op.space.db.transaction() as db:
        kicked = db.scalars(select(AuditRecord.outcome).where(
            AuditRecord.action == "imap.kick", AuditRecord.target == leo)).all()
    assert "ok" in kicked


@pytest.fixture
def emma(mail_operator: Operator) -> Iterator[str]:
    """Emma's account, active again after the test."""
    yield address("emma")
    with mail_operator.space.db.transaction() as session:
        account = session.scalar(select(Account).where(Account.login == address("emma")))
        account.state = AccountState.ACTIVE


def test_the_operator_suspending_an_account_closes_its_imap_sessions(
        mail_operator: Operator, mail_web: Web, as_user: Callable[[str], FlaskClient],
        emma: str) -> None:
    """The operator's page promises « Plus aucune connexion (webmail, IMAP, SMTP…) »."""
    operator = as_user("operator")
    with mail_operator.space.db.transaction() as db:
        account_id = db.scalar(select(Account.id).where(Account.login == emma))
    with _imap(mail_operator, emma) as session:
        session.select_folder("INBOX")
        answer = post_form(operator, f"/operateur/comptes/{account_id}/suspendre",
                           {"motif": ""})
        assert answer.status_code == 302
        wait_until(lambda: _cut_off(session), timeout=15)
