"""IMAP actions on a mailbox, from Dovecot's own events into the audit trail (issue #14 item 5,
ECO.4.1.2: every action on a mailbox, with its author).

Dovecot 2.3.19's stats process exports chosen events as JSON over HTTP (``event_exporter`` with
``transport = http-post``) to mss's hook server (``mailstore.hooks``). Two events are enough:

- ``imap_command_finished`` (``src/imap/imap-client.c``) for the commands that change a mailbox:
  CREATE, DELETE, RENAME, COPY, MOVE, EXPUNGE, STORE (only when it sets ``\\Deleted``), and their
  UID forms; its fields carry the command's name, arguments (folder names, message sets, flags:
  never message content — APPEND, FETCH and SEARCH are not exported) and tagged reply state;
- ``mail_expunged`` (``src/lib-storage/mail-storage.c``) for each message actually removed,
  with its folder and UID, whichever command removed it (EXPUNGE, MOVE, CLOSE).

The webmail reaches IMAP with its master user on the user's behalf, so its actions arrive here
too, as the user's (``user``). Dovecot 2.3.19 puts no master-user field in these events; the
hook server remembers which sessions were opened by a master log-in (the policy ``report``
carries the same session id) and the record then says ``"via": "webmail"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

COMMANDS = {
    "CREATE": "imap.folder_create", "DELETE": "imap.folder_delete",
    "RENAME": "imap.folder_rename", "COPY": "imap.copy", "UID COPY": "imap.copy",
    "MOVE": "imap.move", "UID MOVE": "imap.move", "EXPUNGE": "imap.expunge",
    "UID EXPUNGE": "imap.expunge", "STORE": "imap.flag_deleted",
    "UID STORE": "imap.flag_deleted",
}
# Fields asked of the exporter (``fields``: looked up in the event and its parents).
FIELDS = ("user", "session", "remote_ip", "cmd_name", "cmd_args", "tagged_reply_state",
          "mailbox", "uid")
MAX_ARGS = 256


def exporter_filter() -> str:
    """The ``metric { filter }`` of the exported commands (Dovecot's event filter language)."""
    names = " OR ".join(f'cmd_name="{name}"' for name in COMMANDS)
    return f"event=imap_command_finished AND ({names})"


@dataclass(frozen=True)
class MailboxAction:
    """One audit record to write: who, what, on what, a small summary, the outcome."""

    actor: str
    action: str
    target: str
    outcome: str
    request: dict[str, Any]


def parse(event: Mapping[str, Any], via: Callable[[str], str] = lambda session: "",
          ) -> MailboxAction | None:
    """The action an exported event stands for, or None (not audited: a STORE of other flags,
    an event of another kind, a malformed one). ``via``: the master user who opened a session.
    """
    if not isinstance(event, Mapping):
        return None
    fields = event.get("fields")
    if not isinstance(fields, Mapping):
        return None

    def text(key: str) -> str:
        value = fields.get(key, "")
        return str(value) if isinstance(value, str | int) else ""

    user = text("user").lower()
    if not user:
        return None
    base: dict[str, Any] = {"session": text("session"), "remote": text("remote_ip")}
    master = via(text("session")) if text("session") else ""
    if master:
        base["via"] = master
    name = event.get("event")
    if name == "mail_expunged":
        request = base | {"mailbox": text("mailbox"), "uid": text("uid")}
        return MailboxAction(user, "imap.mail_expunged", user, "ok", request)
    if name != "imap_command_finished":
        return None
    command = text("cmd_name").upper()
    action = COMMANDS.get(command)
    args = text("cmd_args")
    if action is None or (action == "imap.flag_deleted" and "\\deleted" not in args.lower()):
        return None
    request = base | {"command": command, "args": args[:MAX_ARGS]}
    if text("mailbox"):
        request["mailbox"] = text("mailbox")
    outcome = (text("tagged_reply_state") or "unknown").lower()
    return MailboxAction(user, action, user, outcome, request)
