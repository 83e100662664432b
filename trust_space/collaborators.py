"""Administration of an organisational mailbox's collaborators by its administrators.

Roles: Administrateur (everything, including collaborators and settings), Gestionnaire (read,
send, organise, delete), Utilisateur (read and send). Only an administrator changes the list;
the mailbox always keeps at least one administrator, so the last one can neither leave nor
step down. Checked here, for every caller (webmail, CLI).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trust_space import directory
from trust_space.errors import TrustSpaceError
from trust_space.models import Delegation, Mailbox, MailboxKind, Professional, Role

ROLE_FR = {Role.ADMINISTRATOR: "Administrateur", Role.MANAGER: "Gestionnaire",
           Role.USER: "Utilisateur"}


class NotAdministrator(TrustSpaceError):
    """The acting professional is not an administrator of the mailbox."""

    code = "forbidden"


class LastAdministrator(TrustSpaceError):
    """The change would leave the mailbox without an administrator."""

    code = "last_administrator"


def role_of(session: Session, mailbox: Mailbox, professional_id: int | None) -> Role | None:
    """The professional's role on ``mailbox``, or None."""
    if professional_id is None:
        return None
    return session.scalar(select(Delegation.role).where(
        Delegation.mailbox_id == mailbox.id, Delegation.professional_id == professional_id))


def require_administrator(session: Session, mailbox: Mailbox, actor_id: int | None) -> None:
    """Raises NotAdministrator unless ``actor_id`` administers ``mailbox``."""
    if mailbox.kind is not MailboxKind.ORGANISATIONAL or \
            role_of(session, mailbox, actor_id) is not Role.ADMINISTRATOR:
        raise NotAdministrator("Seuls les administrateurs de cette boîte organisationnelle "
                               "peuvent gérer ses collaborateurs.")


def _administrators(session: Session, mailbox: Mailbox) -> int:
    return int(session.scalar(select(func.count(Delegation.id)).where(
        Delegation.mailbox_id == mailbox.id, Delegation.role == Role.ADMINISTRATOR)) or 0)


def _check_keeps_admin(session: Session, mailbox: Mailbox, professional: Professional,
                       new_role: Role | None) -> None:
    current = role_of(session, mailbox, professional.id)
    if current is Role.ADMINISTRATOR and new_role is not Role.ADMINISTRATOR \
            and _administrators(session, mailbox) <= 1:
        raise LastAdministrator("La boîte doit garder au moins un administrateur : nommez "
                                "d'abord un autre administrateur.")


def set_role(session: Session, actor_id: int | None, mailbox: Mailbox,
             professional: Professional, role: Role | str) -> Delegation:
    """Add ``professional`` as a collaborator, or change their role.

    Raises:
        NotAdministrator, LastAdministrator: see the module docstring.
        TrustSpaceError: not a local organisational mailbox.
    """
    require_administrator(session, mailbox, actor_id)
    _check_keeps_admin(session, mailbox, professional, Role(role))
    return directory.add_delegation(session, mailbox, professional, role)


def remove(session: Session, actor_id: int | None, mailbox: Mailbox,
           professional: Professional) -> bool:
    """Withdraw ``professional``'s delegation; False when they had none.

    Raises:
        NotAdministrator, LastAdministrator: see the module docstring.
    """
    require_administrator(session, mailbox, actor_id)
    _check_keeps_admin(session, mailbox, professional, None)
    return directory.remove_delegation(session, mailbox, professional)


def collaborators(session: Session, mailbox: Mailbox) -> list[Delegation]:
    """The mailbox's delegations, administrators first, then by name."""
    rows = session.scalars(select(Delegation).where(Delegation.mailbox_id == mailbox.id)).all()
    order = {Role.ADMINISTRATOR: 0, Role.MANAGER: 1, Role.USER: 2}
    return sorted(rows, key=lambda d: (order[d.role], d.professional.last_name,
                                       d.professional.first_name))
