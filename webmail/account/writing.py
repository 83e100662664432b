"""Mon compte, « Rédaction »: the undo delay of « Envoyer » and a signature for each mailbox
the person may send as (``webmail.mail.writing``). Routes of the ``account`` blueprint.
Changes are audited by name (``account.writing``), never with the signatures' text."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import SelectField
from wtforms.fields.choices import SelectChoice

from core.settings import UNDO_SEND_CHOICES
from webmail.account.views import bp
from webmail.context import mss, record
from webmail.mail.access import Box
from webmail.mail.writing import (
    SIGNATURE_LINES,
    SIGNATURE_MAX,
    SignatureError,
    clean_signature,
    sendable_boxes,
    set_signature,
    set_undo_seconds,
    signatures,
    undo_seconds,
)

DELAY_LABELS = {0: "Aucun délai : le message part aussitôt", 5: "5 secondes",
                10: "10 secondes", 20: "20 secondes", 30: "30 secondes"}


class WritingForm(FlaskForm):
    """The delay (the signatures are fields named ``signature-<mailbox id>``, one per
    mailbox, read in the view)."""

    undo = SelectField("Délai pour annuler un envoi", coerce=int,
                       choices=[SelectChoice(s, DELAY_LABELS[s]) for s in UNDO_SEND_CHOICES])


@bp.route("/redaction", methods=["GET", "POST"])
def writing() -> Response | str | tuple[str, int]:
    boxes = _boxes()
    with mss().db.read() as db:
        current, delay = signatures(db, current_user.id), undo_seconds(db, current_user.id)
    form = WritingForm(data={"undo": delay})
    texts = {b.id: current.get(b.id, "") for b in boxes}
    errors: dict[int, str] = {}
    if request.method == "POST":
        if not form.validate_on_submit():
            if form.undo.errors:  # WTForms says it in English
                form.undo.errors = ["Choisissez l’un des délais proposés."]
            return _page(form, boxes, texts, errors), 400
        cleaned = {}
        for box in boxes:
            texts[box.id] = request.form.get(f"signature-{box.id}", "")[:SIGNATURE_MAX * 4]
            try:
                cleaned[box.id] = clean_signature(texts[box.id])
            except SignatureError as exc:
                errors[box.id] = str(exc)
        if errors:
            return _page(form, boxes, texts, errors), 400
        _save(form.undo.data, cleaned, boxes)
        flash("Vos préférences de rédaction sont enregistrées.", "success")
        return redirect(url_for("account.writing"))
    return _page(form, boxes, texts, errors)


def _boxes() -> list[Box]:
    return sendable_boxes() if current_user.professional_id is not None else []


def _save(delay: int | None, cleaned: dict[int, str], boxes: list[Box]) -> None:
    with mss().db.transaction() as db:
        changed = ["undo_seconds"] if set_undo_seconds(db, current_user.id, int(delay or 0)) \
            else []
        by_id = {b.id: b for b in boxes}
        for box_id, text in cleaned.items():
            if set_signature(db, current_user.id, box_id, text):
                changed.append(f"signature:{by_id[box_id].address}")
        if changed:
            record(db, "account.writing", "ok", target=current_user.login, changed=changed,
                   undo_seconds=delay)


def _page(form: WritingForm, boxes: list[Box], texts: dict[int, str],
          errors: dict[int, str]) -> str:
    return render_template("account/writing.html", form=form, boxes=boxes, texts=texts,
                           errors=errors, section="writing", limit=SIGNATURE_MAX,
                           lines=SIGNATURE_LINES)
