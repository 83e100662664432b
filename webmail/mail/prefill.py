"""What the compose form starts with: a reply (to the sender, or to all), a forward (text and
attachments of the original), a draft taken up again, or an address from the directory. The
source message is read from the same mailbox, within the rights already checked."""

from __future__ import annotations

from flask import abort, request

from core.localtime import french_datetime
from webmail.mail import imap_uid, mime
from webmail.mail.access import Box, imap, valid_folder
from webmail.mail.drafting import (
    ComposeForm,
    one_line,
    policy_minimum,
    prefixed,
    split_addresses,
)
from webmail.mail.folders import DRAFTS
from webmail.mail.richtext import HTML_MAX
from webmail.mail.sanitise import clean_composed
from webmail.mail.writing import sendable_boxes

_QUOTE_MAX = 200_000  # characters of the original quoted in a reply


def prefill(form: ComposeForm, box: Box, policy: str) -> str:
    """Fill ``form`` from the query string (``reponse``, ``tous``, ``transfert``,
    ``brouillon``, ``a``, with ``dossier`` naming the source folder); what it started from:
    "draft", "reply", "forward" or "new"."""
    form.sign.data, form.encrypt.data = policy_minimum(policy)
    args = request.args
    folder = args.get("dossier", "INBOX")
    for key, kind in (("brouillon", "draft"), ("reponse", "reply"), ("transfert", "forward")):
        raw_uid = args.get(key, "")
        if raw_uid:
            uid = imap_uid(raw_uid)
            if uid is None:
                abort(404)  # not a UID (RFC 9051 §2.3.1.1): no such message
            source = DRAFTS if kind == "draft" else folder
            if valid_folder(source):
                _from_message(form, box, source, uid, kind, args.get("tous") == "1")
            return kind
    wanted = split_addresses(args.get("a", ""))[0]
    form.to.data = ", ".join(wanted)
    return "new"


def _from_message(form: ComposeForm, box: Box, folder: str, uid: int, kind: str,
                  to_all: bool) -> None:
    with imap() as session:
        raw = session.message(box.imap_name(folder), uid, mark_seen=False).raw
    reading = mime.read(raw)
    if kind == "draft":
        _draft(form, reading, uid)
    elif kind == "reply":
        _reply(form, box, reading, folder, uid, to_all)
    else:
        _forward(form, reading, folder, uid)


def _draft(form: ComposeForm, reading: mime.Reading, uid: int) -> None:
    form.to.data = ", ".join(reading.addresses("To"))
    form.cc.data = ", ".join(reading.addresses("Cc"))
    form.subject.data = reading.header("Subject")
    form.body.data = reading.text or ""
    security = reading.header("MSS-Security").lower()
    form.sign.data = form.sign.data or "sign" in security
    form.encrypt.data = form.encrypt.data or "encrypt" in security
    form.receipt.data = bool(reading.addresses("Disposition-Notification-To"))
    form.in_reply_to.data = reading.header("In-Reply-To")
    form.references.data = reading.header("References")
    form.draft_uid.data = form.source_uid.data = str(uid)
    form.source_folder.data = DRAFTS
    sender = next(iter(reading.addresses("From")), "").lower()
    form.from_box.data = next((str(b.id) for b in sendable_boxes() if b.address == sender), "")
    if reading.html_index is not None:  # written with « Mise en forme »: the editor takes it
        html = mime.text_of(mime.part_at(reading.message, reading.html_index))
        form.body_html.data = clean_composed(html[:HTML_MAX])
        form.format.data = "html"


def _reply(form: ComposeForm, box: Box, reading: mime.Reading, folder: str, uid: int,
           to_all: bool) -> None:
    sender = reading.addresses("Reply-To") or reading.addresses("From")
    mine = {box.address}
    to = [a.lower() for a in sender]
    cc: list[str] = []
    if to_all:
        to += [a.lower() for a in reading.addresses("To")]
        cc = [a.lower() for a in reading.addresses("Cc")]
    to = [a for a in dict.fromkeys(to) if a not in mine] or to[:1]
    form.to.data = ", ".join(to)
    form.cc.data = ", ".join(a for a in dict.fromkeys(cc) if a not in mine and a not in to)
    form.subject.data = prefixed(reading.header("Subject"), "RE")
    when = french_datetime(reading.date)  # Paris time, as the list shows it
    quoted = "\n".join("> " + line for line in (reading.text or "")[:_QUOTE_MAX].splitlines())
    form.body.data = f"\n\nLe {when}, {reading.header('From')} a écrit :\n{quoted}\n"
    message_id = one_line(reading.message_id)  # an encoded word may decode to a CR or LF
    form.in_reply_to.data = message_id
    form.references.data = " ".join(filter(None, [reading.header("References"), message_id]))
    form.reply_uid.data = str(uid)
    form.source_folder.data = form.reply_folder.data = folder


def _forward(form: ComposeForm, reading: mime.Reading, folder: str, uid: int) -> None:
    form.subject.data = prefixed(reading.header("Subject"), "TR")
    when = french_datetime(reading.date)  # Paris time, as the list shows it
    form.body.data = (
        "\n\n-------- Message transféré --------\n"
        f"De : {reading.header('From')}\nDate : {when}\nObjet : {reading.header('Subject')}\n"
        f"À : {reading.header('To')}\n\n{(reading.text or '')[:_QUOTE_MAX]}\n")
    form.source_folder.data = folder
    form.source_uid.data = str(uid)
