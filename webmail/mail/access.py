"""Who may do what in which mailbox: the one place where every mail route is authorised.

A mail URL names a mailbox by its directory id (``/courrier/<box_id>/…``) and a folder by its
name *inside* that mailbox (``dossier=Sent``). ``mailbox_route(right)`` wraps every view that
takes a ``box_id``: it finds the mailbox among those the logged-in professional holds (their
own personal mailbox, or an organisational one through a ``Delegation``), checks the right
the view needs against the delegation's role, validates the folder name, audits refusals and
hands the view a ``Box``. A mailbox the user has no access to does not exist for them (404);
a right their role lacks is a 403. Dovecot checks the same rights again (IMAP ACLs, same role
table: ``trust_space.policy.role_rights``), since the IMAP session is always the user's own.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import current_app, g, request
from flask_login import current_user
from sqlalchemy.orm import Session

from core.errors import NotFound
from mailstore.config import SEPARATOR, SHARED_PREFIX
from mailstore.imap import MailboxSession
from mailstore.pool import ImapPool
from trust_space.collaborators import ROLE_FR
from trust_space.holdings import mailboxes_of
from trust_space.models import MailboxKind, MailboxState, Role
from trust_space.policy import role_rights
from webmail.context import mss, record
from webmail.errors import Forbidden
from webmail.security import login_manager

F = TypeVar("F", bound=Callable[..., Any])
INBOX = "INBOX"


class Right(enum.StrEnum):
    """What a mail view does to a mailbox (RFC 4314 rights it needs in brackets)."""

    READ = "read"  # list, read, search, download [l r]
    FLAG = "flag"  # read/unread, MDN sent [s w]
    DRAFT = "draft"  # save a draft [i]
    SEND = "send"  # send as the mailbox [p]
    DELETE = "delete"  # move to the Corbeille, restore, empty it [t e]
    FOLDERS = "folders"  # create, rename, delete folders [k x]


_NEEDS = {Right.READ: {"lookup", "read"}, Right.FLAG: {"seen", "write"},
          Right.DRAFT: {"insert"}, Right.SEND: {"post"},
          Right.DELETE: {"delete_messages", "expunge"},
          Right.FOLDERS: {"create", "delete_mailbox"}}
_REFUSED = {Right.FLAG: "modifier l'état des messages", Right.DRAFT: "enregistrer des brouillons",
            Right.SEND: "envoyer au nom de cette boîte",
            Right.DELETE: "supprimer ou déplacer des messages",
            Right.FOLDERS: "gérer les dossiers", Right.READ: "lire cette boîte"}


def rights_of(role: Role | None) -> frozenset[Right]:
    """Everything for one's own mailbox; for a delegation, what its role's IMAP rights allow."""
    if role is None:
        return frozenset(Right)
    names = role_rights(role)
    return frozenset(r for r, needs in _NEEDS.items() if needs <= names)


@dataclass(frozen=True)
class Box:
    """A mailbox as the logged-in user may use it."""

    id: int
    address: str
    name: str
    kind: MailboxKind
    role: Role | None  # None: the user's own personal mailbox
    rights: frozenset[Right]

    @property
    def is_own(self) -> bool:
        return self.role is None

    @property
    def role_label(self) -> str:
        return "Titulaire" if self.role is None else ROLE_FR[self.role]

    def can(self, right: Right) -> bool:
        return right in self.rights

    def imap_name(self, folder: str) -> str:
        """The IMAP name of ``folder`` (a name inside this mailbox) in the user's session."""
        if self.is_own:
            return folder
        return f"{SHARED_PREFIX}{self.address}{SEPARATOR}{folder}"

    def local_name(self, imap_name: str) -> str | None:
        """The folder name inside this mailbox of an IMAP name, None if not in this mailbox."""
        if self.is_own:
            return None if imap_name.startswith(SHARED_PREFIX) else imap_name
        root = f"{SHARED_PREFIX}{self.address}"
        if imap_name == root:  # Dovecot lists a shared user's INBOX as the namespace root
            return INBOX
        prefix = root + SEPARATOR
        return imap_name[len(prefix):] if imap_name.startswith(prefix) else None


def _own_box(session: Session, professional_id: int) -> Box | None:
    # The personal mailbox named by the login, while it is published: a suspension reaches
    # the session at its next request (``webmail.context.load_user`` ends it as well).
    login = current_user.login.lower()
    mailbox = next((m for m in mailboxes_of(session, professional_id, kind=MailboxKind.PERSONAL,
                                            states=(MailboxState.PUBLISHED,))
                    if m.address == login), None)
    if mailbox is None:
        return None
    return Box(mailbox.mailbox_id, mailbox.address, mailbox.display_name
               or current_user.display_name or mailbox.address, mailbox.kind, None,
               rights_of(None))


def accessible_boxes() -> list[Box]:
    """The user's own mailbox first, then the organisational ones they are delegated on
    (published, local), by name. Cached for the request."""
    if "mail_boxes" in g:
        return cast(list[Box], g.mail_boxes)
    boxes: list[Box] = []
    if current_user.is_authenticated and current_user.professional_id is not None:
        # Read-only: the top bar asks for the boxes while a page renders inside its own
        # write transaction (SQLite: a second writer would wait for the first).
        with mss().db.read() as session:
            own = _own_box(session, current_user.professional_id)
            boxes = [own] if own else []
            held = mailboxes_of(session, current_user.professional_id,
                                kind=MailboxKind.ORGANISATIONAL,
                                states=(MailboxState.PUBLISHED,))
            boxes += [Box(m.mailbox_id, m.address, m.display_name or m.address, m.kind, m.role,
                          rights_of(m.role)) for m in held]
    g.mail_boxes = boxes
    return boxes


def own_box() -> Box:
    """The user's personal mailbox.

    Raises:
        NotFound: the account has none (an operator account, for instance).
    """
    boxes = accessible_boxes()
    if not boxes or not boxes[0].is_own:
        raise NotFound("Aucune boîte aux lettres n'est associée à ce compte.")
    return boxes[0]


def authorise(box_id: int, right: Right) -> Box:
    """The mailbox ``box_id`` if the user may do ``right`` in it.

    Raises:
        NotFound: not one of the user's mailboxes (whether or not it exists).
        Forbidden: one of theirs, but their role does not allow ``right``.
    """
    box = next((b for b in accessible_boxes() if b.id == box_id), None)
    if box is None:
        audit("mail.access", None, "not_found", box_id=box_id, right=right.value)
        raise NotFound("Boîte aux lettres introuvable.")
    if not box.can(right):
        audit("mail.access", box, "forbidden", right=right.value)
        raise Forbidden(f"Votre rôle ({box.role_label}) ne permet pas de {_REFUSED[right]}.")
    return box


def folder_arg(default: str = INBOX) -> str:
    """The ``dossier`` of the request (query or form), checked to be a plain folder name.

    Raises:
        NotFound: a name that could reach outside the mailbox (another namespace, wildcards).
    """
    name = (request.values.get("dossier") or default).strip()
    if not valid_folder(name):
        raise NotFound("Dossier introuvable.")
    return name


def valid_folder(name: str) -> bool:
    """A folder name inside a mailbox: no namespace prefix, wildcard or control character."""
    return (0 < len(name) <= 200 and not name.startswith((SHARED_PREFIX, SEPARATOR))
            and name.lower() != "shared" and SEPARATOR * 2 not in name
            and not name.endswith(SEPARATOR)
            and not any(c in name for c in "*%\\") and name.isprintable()
            and not any(part in (".", "..") for part in name.split(SEPARATOR)))


def mailbox_route(right: Right) -> Callable[[F], F]:
    """Decorator of every view taking ``box_id``: the view gets ``box`` (a ``Box``) instead,
    and ``folder`` (the checked ``dossier``) — see the module docstring."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(box_id: int, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            box = authorise(box_id, right)
            g.mail_box = box
            return view(box=box, folder=folder_arg(), **kwargs)

        return cast(F, wrapper)

    return decorate


def pool() -> ImapPool:
    """The application's IMAP session pool (created on first use)."""
    found = current_app.extensions.get("mss.imap")
    if found is None:
        found = current_app.extensions["mss.imap"] = ImapPool.for_settings(mss().settings)
    return cast(ImapPool, found)


@contextmanager
def imap() -> Iterator[MailboxSession]:
    """The logged-in user's own IMAP session (their rights, ACLs included)."""
    with pool().session(current_user.login) as session:
        yield session


def audit(action: str, box: Box | None, outcome: str = "ok", **details: Any) -> None:
    """Audit a mail action: mailbox, folder, ids and counts — never subjects or content."""
    with mss().db.transaction() as session:
        record(session, action, outcome, target=box.address if box else "", **details)
