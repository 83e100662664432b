"""Writing: new message, reply, reply to all, forward (attachments kept), drafts.

The form is checked before anything leaves: a sender (« De ») among the mailboxes the user
may send as (``writing.sendable_boxes``), readable addresses inside the trust space
(``trust_space.policy.may_receive``: a clear message next to the field), the attachment size
limit, the "pièce jointe" reminder. « Envoyer » holds the message for the person's undo delay
(``undo``, ``outbox``) and the gateway takes it (``submit``); a refusal is shown next to the
form and nothing typed is lost — uploaded files are kept by saving the message as a draft (an
``<input type=file>`` cannot be filled again), with a notice. The page saves itself as a
draft while it is typed in (``action=autosave``, ``static/js/autosave.js``): one draft per
compose page, replaced each time.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from typing import IO, Any

from flask import Request, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from core.db import utcnow
from core.localtime import paris
from webmail.context import mss
from webmail.mail import bp, imap_uid, mime, size_fr, undo
from webmail.mail.access import (
    Box,
    Right,
    accessible_boxes,
    audit,
    authorise,
    imap,
    mailbox_route,
    own_box,
    valid_folder,
)
from webmail.mail.attachments import safe_filename
from webmail.mail.drafting import (
    COMPOSE_HEADER,
    Attachment,
    ComposeForm,
    Outgoing,
    build,
    mentions_attachment,
    policy_minimum,
    refused_recipients,
    split_addresses,
)
from webmail.mail.folders import DRAFTS, INBOX, box_folders
from webmail.mail.prefill import prefill
from webmail.mail.protection import protections
from webmail.mail.richtext import HTML_MAX, composed
from webmail.mail.writing import sendable_boxes, sender_box, signature_block, signatures

BODY_MAX = 400_000  # characters of text (ComposeForm.body)
FORGED_FROM = ("Vous ne pouvez pas envoyer depuis l’adresse choisie dans « De » : choisissez "
               "l’une de vos boîtes. Rien n’a été envoyé ; votre message est conservé.")

FORM_MEMORY = 2 * 1024 * 1024
# A compose POST larger than this many times the message limit (at least UPLOAD_CAP_MIN) is
# cut short (HTTP 413): what lies between the attachment limit and it is read and dropped
# (``UploadBudget``), so that a file chosen too large still brings the form back.
UPLOAD_CAP_FACTOR = 4
UPLOAD_CAP_MIN = 64 * 1024 * 1024


def attachment_limit() -> int:
    """Total size of attachments allowed: the gateway's message limit less the base64
    growth (4/3) and room for the text and headers."""
    return int(mss().settings.max_message_size * 0.72)


def raise_upload_limit() -> None:
    """Before CSRF reads the form: let the compose POST carry its attachments."""
    if request.endpoint == "mail.compose" and request.method == "POST":
        request.max_content_length = max(
            mss().settings.max_message_size * UPLOAD_CAP_FACTOR, UPLOAD_CAP_MIN)
        request.max_form_memory_size = FORM_MEMORY


class UploadBudget:
    """The files of one compose POST share the attachment limit. Past it, the bytes still
    arriving are read and dropped (neither memory nor disk) and ``exceeded`` is set: the view
    brings the form back with all its text and a clear error, where a 413 page would lose
    what was typed."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.exceeded = False

    def take(self, size: int) -> bool:
        """True when ``size`` more bytes fit."""
        if self.exceeded or size > self.left:
            self.exceeded = True
            return False
        self.left -= size
        return True


class _BudgetFile(tempfile.SpooledTemporaryFile[bytes]):
    """Werkzeug's usual upload file (memory, then disk past 500 kB), within a budget."""

    def __init__(self, budget: UploadBudget) -> None:
        super().__init__(max_size=500 * 1024, mode="w+b")
        self.budget = budget

    def write(self, data: Any) -> int:
        if self.budget.take(len(data)):
            return int(super().write(data))
        self.truncate(0)
        return len(data)


class UploadRequest(Request):
    """The webmail's request: the compose POST's files go through an ``UploadBudget``
    (Werkzeug's override point for upload streams, ``Request._get_file_stream``)."""

    upload_budget: UploadBudget | None = None

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        if self.endpoint != "mail.compose":
            return super()._get_file_stream(total_content_length, content_type, filename,
                                            content_length)
        if self.upload_budget is None:
            self.upload_budget = UploadBudget(attachment_limit())
        return _BudgetFile(self.upload_budget)


@bp.errorhandler(RequestEntityTooLarge)
def _request_too_large(_exc: RequestEntityTooLarge) -> tuple[str, int]:
    """Past the hard cap (``UPLOAD_CAP_FACTOR``) the form is not read at all: say why and
    what to do. (With scripts on, mail.js stops such files before they leave the browser.)"""
    return render_template(
        "error.html", status=413, title="Pièces jointes trop volumineuses",
        message=f"Les fichiers ajoutés dépassent de loin la limite de "
                f"{_mb(attachment_limit())} au total : rien n’a été envoyé ni enregistré. "
                "Réduisez-les, ou envoyez-les en plusieurs messages."), 413


def uploads_too_large() -> bool:
    """True when this compose POST's files went past the attachment limit."""
    budget = getattr(request, "upload_budget", None)
    return bool(budget is not None and budget.exceeded)


@bp.get("/ecrire")
def compose_new() -> Response:
    """"Écrire" from anywhere (the directory): compose in one's own mailbox."""
    args: dict[str, Any] = dict(request.args.to_dict())
    return redirect(url_for("mail.compose", box_id=own_box().id, **args))


@bp.route("/<int:box_id>/ecrire", methods=["GET", "POST"])
@mailbox_route(Right.SEND)
def compose(box: Box, folder: str) -> Response | str | tuple[str | Response, int]:
    """The compose page; POST ``action=envoyer`` sends, ``action=brouillon`` saves,
    ``action=autosave`` saves and answers JSON (the page's script)."""
    form = ComposeForm()
    if request.method == "GET":
        _start(box, form)
        return _page(box, form, {}, keep_all=True)
    action = request.form.get("action")
    if action == "brouillon":
        return _save_draft(box, form)
    if action == "autosave":
        return _autosave(box, form)
    return _send(box, form)


def _start(box: Box, form: ComposeForm) -> None:
    """A new compose page: what it starts with (``prefill``), its sender, its id, and the
    sender's signature above any quoted text (not in a draft: it has it already)."""
    kind = prefill(form, box, mss().settings.security_policy)
    held = imap_uid(request.args.get("annule"))
    if kind == "draft" and held is not None:
        undo.restore(form, box, held)
    form.compose_id.data = undo.new_compose_id()
    sender = sender_box(form.from_box.data, box) or sender_box("", box) or \
        next(iter(sendable_boxes()), None)
    form.from_box.data = str(sender.id) if sender else ""
    if kind != "draft" and sender is not None:
        with mss().db.read() as db:
            block = signature_block(signatures(db, current_user.id).get(sender.id, ""))
        rest = (form.body.data or "").lstrip("\n")
        if block:  # "-- " then the signature, a blank line, then the quoted original
            form.body.data = "\n\n" + block + "\n" + ("\n" + rest if rest.strip() else "")


def _source(box: Box, form: ComposeForm) -> list[mime.Part]:
    """Attachments offered from the message being forwarded or the draft being edited."""
    folder, uid = form.source_folder.data or "", imap_uid(form.source_uid.data)
    if not valid_folder(folder) or uid is None:
        return []
    with imap() as session:
        found = session.message(box.imap_name(folder), uid, mark_seen=False)
    return mime.read(found.raw).attachments


def _kept(box: Box, form: ComposeForm) -> list[Attachment]:
    chosen = _chosen()
    folder, uid = form.source_folder.data or "", imap_uid(form.source_uid.data)
    if not chosen or not valid_folder(folder) or uid is None:
        return []
    with imap() as session:
        raw = session.message(box.imap_name(folder), uid, mark_seen=False).raw
    reading = mime.read(raw)
    return [Attachment(p.filename, p.content_type,
                       mime.part_bytes(mime.part_at(reading.message, p.index)))
            for p in reading.attachments if p.index in chosen]


def _chosen() -> set[int]:
    """The part numbers ticked in "keep" (ASCII digits only)."""
    return {int(v) for v in request.form.getlist("keep") if v.isascii() and v.isdigit()
            and len(v) < 7}


def _uploads() -> list[Attachment]:
    """The files sent with the form; none when together they exceed the limit (their bytes
    were dropped while reading, ``UploadBudget``)."""
    if uploads_too_large():
        return []
    return [Attachment(safe_filename(f.filename or ""), f.mimetype or "application/octet-stream",
                       f.read()) for f in request.files.getlist("attachments") if f.filename]


def _outgoing(sender: Box, form: ComposeForm, attachments: list[Attachment]) -> Outgoing:
    sign_min, encrypt_min = policy_minimum(mss().settings.security_policy)
    to, _ = split_addresses(form.to.data or "")
    cc, _ = split_addresses(form.cc.data or "")
    html, text = "", form.body.data or ""
    if form.format.data == "html":  # set by the editor's script only (« Mise en forme »)
        html, derived = composed(form.body_html.data or "")
        text = derived or text
    return Outgoing(sender.address, sender.name, to, cc, (form.subject.data or "").strip(),
                    text, sign_min or bool(form.sign.data),
                    encrypt_min or bool(form.encrypt.data), bool(form.receipt.data),
                    form.in_reply_to.data or "", form.references.data or "", attachments,
                    html=html)


def _problems(form: ComposeForm, out: Outgoing) -> dict[str, str]:
    """Field → what is wrong, in French (empty when the message may go)."""
    errors: dict[str, str] = {}
    s = mss().settings
    for name, field in (("to", form.to), ("cc", form.cc)):
        bad = split_addresses(field.data or "")[1]
        if bad:
            errors[name] = "Adresse illisible : " + ", ".join(f"« {b} »" for b in bad) + "."
    if not out.recipients and "to" not in errors:
        errors["to"] = "Indiquez au moins un destinataire."
    with mss().db.transaction() as db:
        refused = refused_recipients(db, out.recipients, {s.domain})
    for address, why in refused.items():
        name = "to" if address in out.to else "cc"
        errors[name] = (errors.get(name, "") + f" « {address} » est hors de l’espace de "
                        f"confiance MSSanté ({why}) : il ne peut pas recevoir ce message.").strip()
    if len(out.recipients) > s.max_recipients:
        errors["to"] = f"Au plus {s.max_recipients} destinataires par message."
    too_large = _too_large(out)
    if too_large:
        errors["attachments"] = too_large
    if len(form.body.data or "") > BODY_MAX or (form.format.data == "html" and len(
            form.body_html.data or "") > HTML_MAX):
        errors["body"] = (f"Le message dépasse {BODY_MAX // 1000} 000 caractères : "
                          "raccourcissez-le, ou joignez le texte en pièce jointe.")
    if not out.attachments and mentions_attachment(out.body) and \
            not form.confirm_no_attachment.data:
        errors["reminder"] = ("Votre message mentionne une pièce jointe, mais aucune n’est "
                              "jointe. Ajoutez-la, ou cochez « Envoyer sans pièce jointe ».")
    return errors


def _send(box: Box, form: ComposeForm) -> Response | tuple[str, int]:
    sender = sender_box(form.from_box.data, box)
    uploads = _uploads()
    out = _outgoing(sender or box, form, _kept(box, form) + uploads)
    problems = _problems(form, out)
    if sender is None:  # a value the page never offered: forged, or a right since removed
        problems["from"] = FORGED_FROM
        audit("mail.send", box, "sender_refused", value=(form.from_box.data or "")[:12])
    if sender is not None and not problems:  # (a None sender is one of the problems)
        answer = undo.send(box, sender, form, out)
        if not isinstance(answer, str):
            return answer
        problems["gateway"] = answer
    replaced = bool(uploads) and _keep_uploads(box, form, out)
    return _page(box, form, problems, keep_all=replaced), 422


def _append_draft(box: Box, form: ComposeForm, out: Outgoing, *,
                  autosave: bool = False) -> tuple[int | None, bytes]:
    """Store the message in Brouillons (replacing the draft being edited); its UID and
    bytes."""
    page = undo.compose_id(form)
    raw, _ = build(out, domain=mss().settings.domain, draft=True, compose_id=page)
    drafts = box.imap_name(DRAFTS)
    with imap() as session:
        uid = session.append(drafts, raw, ["\\Draft", "\\Seen"])
        if box.can(Right.DELETE):  # the draft it replaces, and any other of this page
            older = set(session.uids_with_header(  # a page lives a day at most
                drafts, COMPOSE_HEADER, page, since=(utcnow() - timedelta(days=1)).date()))
            old = imap_uid(form.draft_uid.data)
            older |= {old} if old is not None else set()
            if older - {uid}:
                session.expunge(drafts, sorted(older - {uid}))
    audit("mail.draft", box, folder=DRAFTS, uid=uid, size=len(raw), autosave=autosave)
    return uid, raw


def _keep_uploads(box: Box, form: ComposeForm, out: Outgoing) -> bool:
    """After a refusal: the uploaded files survive in a draft the form now points to.
    True when the form's attachments now come from that draft."""
    uid = _append_draft(box, form, out)[0] if box.can(Right.DRAFT) else None
    if uid is None:
        flash("Vos pièces jointes n’ont pas pu être conservées : ajoutez-les à nouveau.",
              "warning")
        return False
    form.draft_uid.data = form.source_uid.data = str(uid)
    form.source_folder.data = DRAFTS
    flash("Le message a été enregistré dans « Brouillons » pour conserver vos pièces "
          "jointes ; rien n’a été envoyé.", "info")
    return True


def _save_draft(box: Box, form: ComposeForm) -> Response | tuple[str, int]:
    authorise(box.id, Right.DRAFT)
    out = _outgoing(sender_box(form.from_box.data, box) or box, form,
                    _kept(box, form) + _uploads())
    too_large = _too_large(out)
    if too_large:
        return _page(box, form, {"attachments": too_large}), 422
    uid = _append_draft(box, form, out)[0]
    flash("Brouillon enregistré dans « Brouillons ».", "success")
    if uid is None:
        return redirect(url_for("mail.folder", box_id=box.id, dossier=DRAFTS))
    return redirect(url_for("mail.compose", box_id=box.id, brouillon=uid, dossier=DRAFTS))


def may_autosave(box: Box) -> bool:
    """One draft per page means replacing it: the role must allow deleting too."""
    return box.can(Right.DRAFT) and box.can(Right.DELETE)


def _autosave(box: Box, form: ComposeForm) -> tuple[Response, int]:
    """The page saved as its draft, replacing the previous one: JSON with the draft's UID,
    the time (Paris) and its attachments (the page now keeps them from the draft)."""
    if not may_autosave(box):
        return jsonify(error="Votre rôle ne permet pas l’enregistrement automatique."), 403
    out = _outgoing(sender_box(form.from_box.data, box) or box, form,
                    _kept(box, form) + _uploads())
    too_large = _too_large(out)
    if too_large:
        return jsonify(error=too_large), 422
    uid, raw = _append_draft(box, form, out, autosave=True)
    if uid is None:
        return jsonify(error="Le brouillon n’a pas pu être enregistré."), 503
    parts = mime.read(raw).attachments
    return jsonify(draft_uid=uid, source_folder=DRAFTS, saved_at=f"{paris(utcnow()):%H:%M}",
                   attachments=[{"index": p.index, "filename": p.filename, "size": p.size,
                                 "size_text": size_fr(p.size)} for p in parts]), 200


def _too_large(out: Outgoing) -> str:
    """What the form says when the attachments exceed the limit (empty when they fit)."""
    limit = _mb(attachment_limit())
    if uploads_too_large():
        return (f"Les fichiers ajoutés dépassent {limit} au total : ils n’ont pas été joints. "
                "Votre message est conservé ; ajoutez des fichiers plus petits ou "
                "envoyez-les en plusieurs messages.")
    if sum(len(a.data) for a in out.attachments) > attachment_limit():
        return (f"Les pièces jointes dépassent {limit} au total : retirez-en ou envoyez-les "
                "en plusieurs messages.")
    return ""


def _mb(size: int) -> str:
    """``18 Mo``, ``1,4 Mo``: the limit as the page's script writes it too."""
    value = f"{size / (1024 * 1024):.1f}".replace(".", ",").removesuffix(",0")
    return f"{value} Mo"


def _page(box: Box, form: ComposeForm, errors: dict[str, str], *,
          keep_all: bool = False) -> str:
    offered = _source(box, form)
    keep = {p.index for p in offered} if keep_all else \
        _chosen()
    sign_min, encrypt_min = policy_minimum(mss().settings.security_policy)
    with imap() as session:
        folders = box_folders(session, box)
    with mss().db.read() as db:
        signed = signatures(db, current_user.id)
    return render_template(
        "mail/compose.html", box=box, boxes=accessible_boxes(), folders=folders,
        form=form, errors=errors, senders=sendable_boxes(), signatures=signed,
        autosave=may_autosave(box),
        offered=offered, keep=keep, sign_forced=sign_min, encrypt_forced=encrypt_min,
        limit=attachment_limit(), limit_text=_mb(attachment_limit()),
        reminder="reminder" in errors, folder=INBOX,
        protections=protections(form.to.data or "", form.cc.data or "",
                                sign=bool(form.sign.data), encrypt=bool(form.encrypt.data)))
