"""Organisational mailboxes: IMAP ACLs generated from the trust space's delegations.

How a delegate reaches an organisational mailbox (the choice, and why): with their **own**
login (password, CPS card over EXTERNAL, or the webmail's master user), the mailbox appears in
Dovecot's shared namespace (RFC 2342) as ``shared/<mailbox address>/…``, e.g.
``shared/pharma.ducentre.64000@mss.test/INBOX``. Practice software keeps one IMAP account per
practitioner and polls one more folder whose name it can build from the address alone; mail
clients (Thunderbird, Outlook) list it on their own through NAMESPACE/LIST; no second secret or
special login syntax is needed, and every action is done — and logged — as the person.

Only a **published** mailbox is shared: a pending (not yet validated) or suspended one keeps
its folders and an ACL file with its owner's line alone, so no delegate lists or opens it; the
supervisor of ``mss run`` rewrites the files when a state changes and kicks the sessions already
open on it (``mailstore.states``).

Rights follow the delegation's role (``trust_space.policy.imap_acl_rights``, RFC 4314 letters):
user ``lrswip`` (read, flags, append), manager ``lrswipkxte`` (also folders, delete, expunge),
administrator the same as manager over IMAP: the administrator's ``a`` is the right to manage
the delegations in the webmail, never given to Dovecot. mss is the only source (issue #14):
``sync`` rewrites every organisational mailbox's ``dovecot-acl`` files (Dovecot's vfile backend,
one per folder, in the folder's ``dbox-Mails`` directory) and the shared-mailboxes dictionary
that lets LIST find them; the global ACL file (``mailstore.config.OWNER_RIGHTS``) gives every
owner all rights but ``a`` on their own folders. Nobody holds ``a``, so every SETACL and
DELETEACL is refused (RFC 4314 §4: they need ``a``), while MYRIGHTS, LIST and
the shared namespace keep working. Dovecot sees a rewritten file within ``acl_cache_secs``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import Database
from core.settings import Settings
from mailstore.config import OWNER_RIGHTS, SPECIAL_FOLDERS, DovecotPaths, ProcessUsers
from trust_space.holdings import NOT_CLOSED, local_mailboxes, logins_of, mailboxes_of
from trust_space.models import Mailbox, MailboxKind, MailboxState
from trust_space.policy import imap_acl_rights

ADMIN_RIGHT = "a"  # RFC 4314 §2.1: administer (SETACL/DELETEACL/GETACL/LISTRIGHTS)
ACL_FILE = "dovecot-acl"
MAILS = "dbox-Mails"  # sdbox: a folder's messages, index and control files


@dataclass
class AclReport:
    """What ``sync`` wrote: mailbox address → {delegate login: rights}."""

    mailboxes: dict[str, dict[str, str]] = field(default_factory=dict)


def delegations(session: Session) -> dict[str, dict[str, str]]:
    """Every local, not closed organisational mailbox with its delegates' logins and rights:
    none unless it is published (a pending or suspended mailbox is nobody's to read, as in the
    webmail and at the relay), none for a delegate without an account (no login)."""
    result: dict[str, dict[str, str]] = {
        address: {} for address in local_mailboxes(
            session, kind=MailboxKind.ORGANISATIONAL, states=NOT_CLOSED)}
    held = mailboxes_of(session, None, kind=MailboxKind.ORGANISATIONAL,
                        states=(MailboxState.PUBLISHED,))
    logins = logins_of(session, {h.professional_id for h in held})
    for holding in held:
        login = logins.get(holding.professional_id)
        if login is not None and holding.role is not None:
            rights = imap_acl_rights(holding.role).replace(ADMIN_RIGHT, "")
            result.setdefault(holding.address, {})[login] = rights
    return result


def sync(db: Database, paths: DovecotPaths, users: ProcessUsers,
         settings: Settings | None = None) -> AclReport:
    """Rewrite the ACL files of every organisational mailbox and the shared dictionary; with
    several mail stores (``settings``' ``MSS_MAIL_STORES``), of this store's mailboxes only
    (no folders made on a store for a mailbox that lives on another)."""
    with db.transaction() as session:
        wanted = delegations(session)
        if settings is not None and settings.stores:
            default = settings.stores[0].name
            placed = dict(session.execute(select(Mailbox.address, Mailbox.mail_store).where(
                Mailbox.address.in_(list(wanted)), Mailbox.operator_id.is_(None))).all())
            wanted = {a: r for a, r in wanted.items()
                      if (placed.get(a) or default) == settings.own_store}
    for address, rights in wanted.items():
        store = mailbox_store(paths, address)
        _ensure_folders(store, paths.mail_dir, users)
        for folder in _folders(store):
            _write_acl(folder / ACL_FILE, rights, users)
    _write_shared_dict(paths.shared_dict, wanted, users)
    return AclReport(wanted)


def mailbox_store(paths: DovecotPaths, address: str) -> Path:
    """A mailbox's sdbox root: ``DATA_DIR/mail/<domain>/<local part>/sdbox``."""
    local, _, domain = address.lower().rpartition("@")
    return paths.mail_dir / domain / local / "sdbox"


def _ensure_folders(store: Path, root: Path, users: ProcessUsers) -> None:
    """INBOX and the special folders exist before anyone reaches them through the shared
    namespace (auto-creation only happens in the owner's own namespace)."""
    for name in ("INBOX", *(name for name, _ in SPECIAL_FOLDERS)):
        _makedirs(store / "mailboxes" / name / MAILS, root, users)


def _makedirs(path: Path, root: Path, users: ProcessUsers) -> None:
    """``mkdir -p`` below ``root``, each new directory owned by the mail user."""
    missing = []
    while path != root and not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        _own(directory, users)


def _folders(store: Path) -> Iterable[Path]:
    """Every folder's ``dbox-Mails`` directory (sub-folders included), where its ACL lives."""
    yield from sorted(p for p in (store / "mailboxes").rglob(MAILS) if p.is_dir())


def _write_acl(path: Path, rights: dict[str, str], users: ProcessUsers) -> None:
    lines = [f"owner {OWNER_RIGHTS}"]
    lines += [f"user={login} {letters}" for login, letters in sorted(rights.items())]
    _replace(path, "\n".join(lines) + "\n", users)


def _write_shared_dict(path: Path, wanted: dict[str, dict[str, str]],
                       users: ProcessUsers) -> None:
    """Dovecot's ``file:`` dict, alternating key and value lines: which users see which
    owners' shared mailboxes (``acl_shared_dict``)."""
    lines = []
    for owner, rights in sorted(wanted.items()):
        for login, letters in sorted(rights.items()):
            if "l" in letters:
                lines += [f"shared/shared-boxes/user/{login}/{owner}", "1"]
    _replace(path, "".join(line + "\n" for line in lines), users)


def _replace(path: Path, text: str, users: ProcessUsers) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # webmail and mss may both sync
    tmp.write_text(text)
    _own(tmp, users)
    os.replace(tmp, path)


def _own(path: Path, users: ProcessUsers) -> None:
    if users.privileged:
        os.chown(path, users.mail_uid, users.mail_gid)
