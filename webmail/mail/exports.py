"""A message's other ways out besides its read view: an attachment previewed inline, all its
attachments as one ZIP, its print page, its ``.eml``, its source and its header section.

What these show is what the mailbox stores. A message that arrived S/MIME-encrypted is kept
as the gateway opened it — decrypted with the mailbox's key, the sender's signature kept
(``gateway.accept.opening``) — so its source, ``.eml`` and printout are that version; one the
gateway could not open is kept, and shown, as its encrypted envelope. Each page says which
(``stored_note``).

Every route is authorised by ``mailbox_route`` (the user's own mailboxes, their role's right)
and audited as a read (``mail.read`` with ``view``) or a download (``mail.download`` with
``part``), with ids and sizes only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import current_app, render_template, request
from flask_login import current_user
from markupsafe import Markup
from werkzeug.wrappers import Response

from core.errors import NotFound
from core.localtime import paris
from mailformat import headers
from mailstore.imap import Message
from webmail.errors import WebmailError
from webmail.forms import EmptyForm
from webmail.mail import bp, mime, preview, ziparchive
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.attachments import download, inline, safe_filename
from webmail.mail.folders import box_folders, label
from webmail.mail.read import Shown, _cid_url, shown
from webmail.mail.sanitise import sanitise

SOURCE_MAX = 512 * 1024  # characters of source shown in a page; the .eml has everything
HEADERS_MAX = 64 * 1024
ZIP_MAX_BYTES = 100 * 1024 * 1024  # app.config["MAIL_ZIP_MAX_BYTES"] overrides
ZIP_MAX_FILES = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ZipTooLarge(WebmailError):
    code = "zip_too_large"
    status = 413
    title = "Archive trop volumineuse"


def stored_note(item: Shown) -> str | None:
    """What the mailbox keeps of an encrypted message (module docstring), None otherwise."""
    if item.reading.unreadable:
        return ("Ce message est conservé chiffré : la passerelle de votre opérateur n’a pas pu "
                "l’ouvrir. La source et le fichier .eml sont l’enveloppe S/MIME telle qu’elle "
                "est arrivée, illisible sans la clé de la boîte destinataire.")
    if item.badge.encrypted:
        return ("Ce message est arrivé chiffré (S/MIME). La passerelle de votre opérateur l’a "
                "déchiffré à sa réception avec la clé de la boîte ; c’est cette version "
                "déchiffrée, signature de l’expéditeur comprise, que la boîte conserve et que "
                "montrent la source, le fichier .eml et l’impression.")
    return None


def _fetch(box: Box, folder: str, uid: int) -> Message:
    with imap() as session:
        return session.message(box.imap_name(folder), uid, mark_seen=False)


def _subject_name(raw_subject: str, fallback: str, extension: str) -> str:
    # A "/" in a subject is no path: kept as a dash (safe_filename keeps the last component).
    subject = " ".join(raw_subject.replace("/", "-").replace("\\", "-").split())[:80]
    return safe_filename(f"{subject or fallback}.{extension}", f"{fallback}.{extension}")


@bp.get("/<int:box_id>/message/<uid:uid>/piece/<int:index>/apercu")
@mailbox_route(Right.READ)
def preview_part(box: Box, folder: str, uid: int, index: int) -> Response:
    """One attachment shown inline when ``preview.inline_type`` allows it, else the same
    download as ``mail.attachment``."""
    parsed = mime.parse(_fetch(box, folder, uid).raw)
    part = mime.part_at(parsed, index)
    name = part.get_filename() or mime.default_name(part.get_content_type(), index)
    data = mime.part_bytes(part)
    kind = preview.inline_type(part.get_content_type(), name, data)
    audit("mail.download", box, folder=folder, uid=uid, part=index, inline=kind is not None)
    if kind is None:
        return download(data, name, part.get_content_type())
    return inline(data, name, kind)


def _zip_limit() -> int:
    return int(current_app.config.get("MAIL_ZIP_MAX_BYTES", ZIP_MAX_BYTES))


def _stored_size(box: Box, folder: str, uid: int) -> int:
    """The message's size as stored (RFC822.SIZE), without reading it."""
    with imap() as session:
        session.select(box.imap_name(folder))
        found = session._call(session.client.fetch, [uid], [b"RFC822.SIZE"]).get(uid)
    if not found:
        raise NotFound("Message introuvable.")
    return int(found.get(b"RFC822.SIZE", 0))


@bp.get("/<int:box_id>/message/<uid:uid>/pieces-jointes.zip")
@mailbox_route(Right.READ)
def attachments_zip(box: Box, folder: str, uid: int) -> Response:
    """Every attachment of the message in one ZIP archive (``ziparchive``), refused with a
    clear page past ``MAIL_ZIP_MAX_BYTES`` (checked on the stored size first, then on the
    decoded attachments) or ``ZIP_MAX_FILES``."""
    limit = _zip_limit()
    # base64 makes a part a third larger: a message past twice the bound cannot fit it.
    if _stored_size(box, folder, uid) > 2 * limit:
        _refuse_zip(box, folder, uid, limit)
    found = _fetch(box, folder, uid)
    reading = mime.read(found.raw)
    if not reading.attachments:
        raise NotFound("Ce message n’a pas de pièce jointe.")
    files = [(p.filename, mime.part_bytes(mime.part_at(reading.message, p.index)))
             for p in reading.attachments[:ZIP_MAX_FILES + 1]]
    total = sum(len(data) for _, data in files)
    if total > limit or len(files) > ZIP_MAX_FILES:
        _refuse_zip(box, folder, uid, limit)
    audit("mail.download", box, folder=folder, uid=uid, part="zip", count=len(files),
          size=total)
    when = paris(reading.date or datetime.now(UTC))
    response = Response(ziparchive.stream(files, when), mimetype="application/zip")
    name = _subject_name(reading.header("Subject"), "pieces-jointes", "zip")
    return _as_attachment(response, name)


def _refuse_zip(box: Box, folder: str, uid: int, limit: int) -> None:
    audit("mail.download", box, "too_large", folder=folder, uid=uid, part="zip")
    raise ZipTooLarge(f"Les pièces jointes de ce message dépassent {limit // (1024 * 1024)} Mo "
                      "ensemble : téléchargez-les une par une depuis le message.")


def _as_attachment(response: Response, name: str) -> Response:
    """``response`` as a download named ``name`` (the headers of ``attachments.download``)."""
    model = download(b"", name, "application/octet-stream")
    for header in ("Content-Disposition", "Content-Security-Policy", "X-Content-Type-Options"):
        response.headers[header] = model.headers[header]
    return response


@bp.get("/<int:box_id>/message/<uid:uid>/eml")
@mailbox_route(Right.READ)
def eml(box: Box, folder: str, uid: int) -> Response:
    """The message as stored, RFC 5322 bytes, as a ``.eml`` download (``message/rfc822``)."""
    found = _fetch(box, folder, uid)
    subject = mime.read(found.raw).header("Subject")
    audit("mail.download", box, folder=folder, uid=uid, part="eml", size=len(found.raw))
    return download(found.raw, _subject_name(subject, "message", "eml"), "message/rfc822")


def _source_text(raw: bytes, limit: int) -> tuple[str, bool]:
    """``raw`` as text for a page (UTF-8, undecodable bytes replaced, line ends as LF, control
    characters but tab shown as �), cut at ``limit`` characters; and whether it was cut."""
    text = raw[:limit * 4].decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("\ufffd", text)
    return text[:limit], len(text) > limit or len(raw) > limit * 4


@bp.get("/<int:box_id>/message/<uid:uid>/source")
@mailbox_route(Right.READ)
def source(box: Box, folder: str, uid: int) -> str:
    """The message's source as text in a page, up to ``SOURCE_MAX`` characters."""
    return _raw_page(box, folder, uid, "source")


@bp.get("/<int:box_id>/message/<uid:uid>/en-tetes")
@mailbox_route(Right.READ)
def header_section(box: Box, folder: str, uid: int) -> str:
    """The message's header section as text in a page, up to ``HEADERS_MAX`` characters."""
    return _raw_page(box, folder, uid, "headers")


def _raw_page(box: Box, folder: str, uid: int, view: str) -> str:
    with imap() as session:
        found = session.message(box.imap_name(folder), uid, mark_seen=False)
        folders = box_folders(session, box)
    item = shown(box, folder, found)
    if view == "headers":
        text, cut = _source_text(headers.split_head(found.raw)[0], HEADERS_MAX)
    else:
        text, cut = _source_text(found.raw, SOURCE_MAX)
    audit("mail.read", box, folder=folder, uid=uid, view=view)
    return render_template(
        "mail/source.html", box=box, boxes=accessible_boxes(), folders=folders,
        folder=folder, folder_label=label(folder), uid=uid, m=item, view=view, text=text,
        cut=cut, size=len(found.raw), note=stored_note(item), form=EmptyForm())


@bp.get("/<int:box_id>/message/<uid:uid>/impression")
@mailbox_route(Right.READ)
def printable(box: Box, folder: str, uid: int) -> str:
    """The message alone for printing: header fields, body, list of attachments, without the
    application around it. ``imprimer=1`` opens the print dialog (js/print.js)."""
    with imap() as session:
        found = session.message(box.imap_name(folder), uid, mark_seen=False)
    item = shown(box, folder, found)
    html = None
    if item.reading.html_index is not None:  # what the read view shows, made inert
        body = mime.text_of(mime.part_at(item.reading.message, item.reading.html_index))
        html = Markup(sanitise(body, show_images=False,
                               cid_url=_cid_url(box, folder, uid, item.reading)).html)
    audit("mail.read", box, folder=folder, uid=uid, view="print")
    return render_template("mail/print.html", box=box, folder=folder, uid=uid, m=item,
                           html=html, note=stored_note(item), now=datetime.now(UTC),
                           reader=current_user.display_name or current_user.login,
                           auto=request.args.get("imprimer") == "1")
