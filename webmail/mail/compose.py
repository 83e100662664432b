"""Writing: new message, reply, reply to all, forward (attachments kept), drafts.

The form is checked before anything leaves: readable addresses inside the trust space
(``trust_space.policy.may_receive``: a clear message next to the field), the attachment size
limit, the "pièce jointe" reminder. Sending goes through the gateway (``submit``); a refusal
is shown next to the form and nothing typed is lost — uploaded files are kept by saving the
message as a draft (an ``<input type=file>`` cannot be filled again), with a notice.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from flask import Request, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from webmail.context import mss
from webmail.mail import bp, imap_uid, mime, plural_fr
from webmail.mail.access import (
    Box,
    Right,
    accessible_boxes,
    audit,
    imap,
    mailbox_route,
    own_box,
    valid_folder,
)
from webmail.mail.attachments import safe_filename
from webmail.mail.drafting import (
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
from webmail.mail.submit import SubmissionRefused, Submitter

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


class _BudgetFile(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
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
def compose(box: Box, folder: str) -> Response | str | tuple[str, int]:
    """The compose page; POST ``action=envoyer`` sends, ``action=brouillon`` saves."""
    form = ComposeForm()
    if request.method == "GET":
        prefill(form, box, mss().settings.security_policy)
        return _page(box, form, {}, keep_all=True)
    if request.form.get("action") == "brouillon":
        return _save_draft(box, form)
    return _send(box, form)


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


def _outgoing(box: Box, form: ComposeForm, attachments: list[Attachment]) -> Outgoing:
    sign_min, encrypt_min = policy_minimum(mss().settings.security_policy)
    to, _ = split_addresses(form.to.data or "")
    cc, _ = split_addresses(form.cc.data or "")
    return Outgoing(box.address, box.name, to, cc, (form.subject.data or "").strip(),
                    form.body.data or "", sign_min or bool(form.sign.data),
                    encrypt_min or bool(form.encrypt.data), bool(form.receipt.data),
                    form.in_reply_to.data or "", form.references.data or "", attachments)


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
    if not out.attachments and mentions_attachment(out.body) and \
            not form.confirm_no_attachment.data:
        errors["reminder"] = ("Votre message mentionne une pièce jointe, mais aucune n’est "
                              "jointe. Ajoutez-la, ou cochez « Envoyer sans pièce jointe ».")
    return errors


def _send(box: Box, form: ComposeForm) -> Response | tuple[str, int]:
    uploads = _uploads()
    out = _outgoing(box, form, _kept(box, form) + uploads)
    problems = _problems(form, out)
    if not problems:
        raw, _message_id = build(out, domain=mss().settings.domain)
        try:
            queue_id = Submitter.for_settings(mss().settings).send(
                current_user.login, box.address, out.recipients, raw)
        except SubmissionRefused as exc:
            problems["gateway"] = exc.message
            audit("mail.send", box, "refused", recipients=len(out.recipients),
                  reply=exc.reply)
        else:
            _after_send(box, form, queue_id, out, len(raw))
            return redirect(url_for("mail.folder", box_id=box.id, dossier=INBOX))
    replaced = bool(uploads) and _keep_uploads(box, form, out)
    return _page(box, form, problems, keep_all=replaced), 422


def _after_send(box: Box, form: ComposeForm, queue_id: str, out: Outgoing, size: int) -> None:
    with imap() as session:
        draft = imap_uid(form.draft_uid.data)
        if draft is not None and box.can(Right.DELETE):
            session.expunge(box.imap_name(DRAFTS), [draft])
        reply_uid, source = imap_uid(form.reply_uid.data), form.source_folder.data or ""
        if reply_uid is not None and valid_folder(source) and box.can(Right.FLAG):
            session.set_flags(box.imap_name(source), [reply_uid], ["\\Answered"])
    audit("mail.send", box, queue_id=queue_id, recipients=len(out.recipients), size=size,
          attachments=len(out.attachments), sign=out.sign, encrypt=out.encrypt)
    flash(f"Message envoyé à {plural_fr(len(out.recipients), 'destinataire')}. Sa copie est "
          "dans « Messages envoyés ».", "success")


def _append_draft(box: Box, form: ComposeForm, out: Outgoing) -> int | None:
    """Store the message in Brouillons (replacing the draft being edited); its UID."""
    raw, _ = build(out, domain=mss().settings.domain, draft=True)
    with imap() as session:
        uid = session.append(box.imap_name(DRAFTS), raw, ["\\Draft", "\\Seen"])
        old = imap_uid(form.draft_uid.data)
        if old is not None and box.can(Right.DELETE):
            session.expunge(box.imap_name(DRAFTS), [old])
    audit("mail.draft", box, folder=DRAFTS, uid=uid, size=len(raw))
    return uid


def _keep_uploads(box: Box, form: ComposeForm, out: Outgoing) -> bool:
    """After a refusal: the uploaded files survive in a draft the form now points to.
    True when the form's attachments now come from that draft."""
    uid = _append_draft(box, form, out) if box.can(Right.DRAFT) else None
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
    from webmail.mail.access import authorise

    authorise(box.id, Right.DRAFT)
    out = _outgoing(box, form, _kept(box, form) + _uploads())
    too_large = _too_large(out)
    if too_large:
        return _page(box, form, {"attachments": too_large}), 422
    uid = _append_draft(box, form, out)
    flash("Brouillon enregistré dans « Brouillons ».", "success")
    if uid is None:
        return redirect(url_for("mail.folder", box_id=box.id, dossier=DRAFTS))
    return redirect(url_for("mail.compose", box_id=box.id, brouillon=uid, dossier=DRAFTS))


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
    return f"{size / (1024 * 1024):.0f} Mo"


def _page(box: Box, form: ComposeForm, errors: dict[str, str], *,
          keep_all: bool = False) -> str:
    offered = _source(box, form)
    keep = {p.index for p in offered} if keep_all else \
        _chosen()
    sign_min, encrypt_min = policy_minimum(mss().settings.security_policy)
    with imap() as session:
        folders = box_folders(session, box)
    return render_template(
        "mail/compose.html", box=box, boxes=accessible_boxes(), folders=folders,
        form=form, errors=errors,
        offered=offered, keep=keep, sign_forced=sign_min, encrypt_forced=encrypt_min,
        limit=attachment_limit(), limit_text=_mb(attachment_limit()),
        reminder="reminder" in errors, folder=INBOX,
        protections=protections(form.to.data or "", form.cc.data or "",
                                sign=bool(form.sign.data), encrypt=bool(form.encrypt.data)))
