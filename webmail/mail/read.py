"""Reading a message: its page (headers, security badge, text, attachments, MSSanté fields,
delivery timeline of a sent message, read-receipt question), its HTML body served alone for
the sandboxed frame, its attachments as downloads (XDM packages opened), the read receipt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup
from werkzeug.wrappers import Response

from mailstore.imap import MailboxSession, Message
from webmail.context import mss
from webmail.forms import EmptyForm
from webmail.mail import bp, listview, mime, preview, relay
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.attachments import XdmDocument, download, xdm_documents, xdm_member
from webmail.mail.badge import Badge, StoreCache, badge_for, voucher
from webmail.mail.folders import DRAFTS, SENT, TRASH, box_folders, label
from webmail.mail.preferences import choices
from webmail.mail.receipts import MDN_SENT, build_mdn
from webmail.mail.sanitise import frame_csp, sanitise
from webmail.mail.submit import SubmissionRefused, Submitter


def fetch(box: Box, folder: str, uid: int, *, mark_seen: bool = False) -> Message:
    """One message of the mailbox (``MailboxNotFound`` → 404 by the blueprint)."""
    with imap() as session:
        return session.message(box.imap_name(folder), uid, mark_seen=mark_seen)


def _badge(raw: bytes, reading: mime.Reading, folder: str = "") -> Badge:
    cache = current_app.extensions.setdefault("mss.mail.store",
                                              StoreCache(mss().settings.pki_dir))
    return badge_for(raw, reading.message, voucher(), cache.get(), sent=folder == SENT)


def _cid_url(box: Box, folder: str, uid: int, reading: mime.Reading
             ) -> Callable[[str], str | None]:
    def url(cid: str) -> str | None:
        index = reading.inline.get(cid)
        if index is None:
            return None
        return url_for("mail.attachment", box_id=box.id, uid=uid, index=index, dossier=folder,
                       _external=True)

    return url


@dataclass(frozen=True)
class Shown:
    """One message as a page shows it: the read view, or one message of a conversation."""

    uid: int
    folder: str
    reading: mime.Reading
    flags: tuple[str, ...]
    badge: Badge
    blocked: int  # remote images not loaded
    xdm: dict[int, list[XdmDocument]]  # part index -> documents of an IHE XDM package
    inline: dict[int, str]  # part index -> the type it is previewed as (``preview``)
    refused: dict[int, str]  # part index -> why a would-be image or PDF is not previewed
    ask_receipt: bool

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags


def shown(box: Box, folder: str, found: Message) -> Shown:
    """What the page shows of ``found`` (a message of ``folder`` in ``box``)."""
    reading = mime.read(found.raw)
    blocked = 0
    if reading.html_index is not None:
        html = mime.text_of(mime.part_at(reading.message, reading.html_index))
        blocked = sanitise(html, show_images=False,
                           cid_url=_cid_url(box, folder, found.uid, reading)).blocked_images
    xdm, inline, refused = {}, {}, {}
    for p in reading.attachments:
        data = mime.part_bytes(mime.part_at(reading.message, p.index))
        if p.is_xdm:
            xdm[p.index] = xdm_documents(data)
        kind, why = preview.judge(p.content_type, p.filename, data)
        if kind is not None:
            inline[p.index] = kind
        elif why is not None:
            refused[p.index] = why
    return Shown(found.uid, folder, reading, found.flags, _badge(found.raw, reading, folder),
                 blocked, xdm, inline, refused, _ask_receipt(box, folder, reading, found.flags))


@bp.get("/<int:box_id>/message/<uid:uid>")
@mailbox_route(Right.READ)
def message(box: Box, folder: str, uid: int) -> str:
    """The read view."""
    with imap() as session:
        around = _around(session, box, folder, uid)  # before reading marks it seen
        found = session.message(box.imap_name(folder), uid, mark_seen=box.can(Right.FLAG))
        folders = box_folders(session, box)
    item = shown(box, folder, found)
    reading = item.reading
    with mss().db.transaction() as db:
        steps = relay.timeline(db, reading.message_id, box.address) if folder == SENT else []
    audit("mail.read", box, folder=folder, uid=uid)
    return render_template(
        "mail/read.html", box=box, boxes=accessible_boxes(), folders=folders, folder=folder,
        folder_label=label(folder), uid=uid, m=item, reading=reading, flags=found.flags,
        badge=item.badge, blocked=item.blocked, timeline=steps,
        show_images=request.args.get("images") == "1", form=EmptyForm(), xdm=item.xdm,
        ask_receipt=item.ask_receipt, specials=(SENT, DRAFTS, TRASH), around=around)


@dataclass(frozen=True)
class Around:
    """The read view's place in its list: the list's view (sort, filter), that view at the
    page showing the message, and the previous and next messages in that order."""

    view: listview.View
    back: listview.View
    previous: int | None
    next: int | None


def _around(session: MailboxSession, box: Box, folder: str, uid: int) -> Around:
    view = listview.View.parse(request.args)
    uids = listview.view_uids(session, box.imap_name(folder), view,
                              sent=folder in (SENT, DRAFTS))
    previous, following, index = listview.neighbours(uids, uid)
    back = replace(view, page=index // choices().page_size + 1) if index >= 0 else view
    return Around(view, back, previous, following)


def _ask_receipt(box: Box, folder: str, reading: mime.Reading, flags: tuple[str, ...]) -> bool:
    return (reading.mdn_to is not None and MDN_SENT not in flags and box.can(Right.SEND)
            and folder not in (SENT, DRAFTS) and reading.mdn_to.lower() != box.address)


@bp.get("/<int:box_id>/message/<uid:uid>/corps")
@mailbox_route(Right.READ)
def body(box: Box, folder: str, uid: int) -> Response:
    """The sanitised HTML body alone, for the sandboxed frame of the read view."""
    reading = mime.read(fetch(box, folder, uid).raw)
    if reading.html_index is None:
        abort(404)
    show = request.args.get("images") == "1"
    html = mime.text_of(mime.part_at(reading.message, reading.html_index))
    clean = sanitise(html, show_images=show, cid_url=_cid_url(box, folder, uid, reading))
    response = current_app.make_response(
        render_template("mail/frame.html", html=Markup(clean.html)))
    response.headers["Content-Security-Policy"] = frame_csp(show)
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.get("/<int:box_id>/message/<uid:uid>/piece/<int:index>")
@mailbox_route(Right.READ)
def attachment(box: Box, folder: str, uid: int, index: int) -> Response:
    """One part as a download."""
    parsed = mime.parse(fetch(box, folder, uid).raw)
    part = mime.part_at(parsed, index)
    name = part.get_filename() or mime.default_name(part.get_content_type(), index)
    audit("mail.download", box, folder=folder, uid=uid, part=index)
    return download(mime.part_bytes(part), name, part.get_content_type())


@bp.get("/<int:box_id>/message/<uid:uid>/piece/<int:index>/document/<int:member>")
@mailbox_route(Right.READ)
def xdm_document(box: Box, folder: str, uid: int, index: int, member: int) -> Response:
    """One document of an XDM package, as a download."""
    parsed = mime.parse(fetch(box, folder, uid).raw)
    found = xdm_member(mime.part_bytes(mime.part_at(parsed, index)), member)
    if found is None:
        abort(404)
    audit("mail.download", box, folder=folder, uid=uid, part=index, member=member)
    return download(found[1], found[0], "application/octet-stream")


@bp.post("/<int:box_id>/message/<uid:uid>/accuse")
@mailbox_route(Right.SEND)
def receipt(box: Box, folder: str, uid: int) -> Response:
    """Send the read receipt the sender asked for (``reponse=envoyer``) or decline it."""
    reading = mime.read(fetch(box, folder, uid).raw)
    back = redirect(url_for("mail.message", box_id=box.id, uid=uid, dossier=folder))
    if reading.mdn_to is None:
        abort(404)
    send = request.form.get("reponse") == "envoyer"
    if send:
        s = mss().settings
        raw = build_mdn(mailbox=box.address, mailbox_name=box.name, to=reading.mdn_to,
                        original_id=reading.message_id, original_subject=reading.header(
                            "Subject"), hostname=s.hostname, domain=s.domain)
        try:
            Submitter.for_settings(s).send(current_user.login, box.address,
                                           [reading.mdn_to], raw)
        except SubmissionRefused as exc:
            audit("mail.mdn", box, "refused", folder=folder, uid=uid)
            flash(exc.message, "error")
            return back
    if box.can(Right.FLAG):
        with imap() as session:
            session.set_flags(box.imap_name(folder), [uid], [MDN_SENT])
    audit("mail.mdn", box, "sent" if send else "declined", folder=folder, uid=uid)
    flash("Accusé de lecture envoyé." if send else "Aucun accusé de lecture ne sera envoyé.",
          "success")
    return back
