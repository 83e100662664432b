"""Mes contacts: the personal address book's pages (``/contacts``).

Every form POSTs with its CSRF token and works without JavaScript; every change is audited
(``contact.*``, the address as target, never the note). Ids of another account's contacts or
groups answer 404, like an id that does not exist.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from webmail.contacts import book
from webmail.context import mss, record

bp = Blueprint("contacts", __name__, url_prefix="/contacts")
PER_PAGE = 100
F = TypeVar("F", bound=Callable[..., Any])


@bp.before_request
@login_required
def _require_professional() -> None:
    """The address book is for professionals (operators have no mail)."""
    if current_user.professional_id is None:
        from webmail.errors import Forbidden

        raise Forbidden("Le carnet d’adresses est réservé aux professionnels.")


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> tuple[str, int]:
    """A file past the request limit (the application's 2 MB) is not read at all."""
    return render_template(
        "error.html", status=413, title="Fichier trop volumineux",
        message="Ce fichier dépasse la taille permise (1 Mo au plus) : rien n’a été importé. "
                "Exportez vos contacts en plusieurs fichiers."), 413


def _domains() -> set[str]:
    return {mss().settings.domain}


def _int(value: str | None, default: int, low: int, high: int) -> int:
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        return default
    return min(max(int(text), low), high)


def _group_ids() -> list[int]:
    ids = []
    for value in request.form.getlist("groupe")[:book.MAX_GROUPS]:
        if not (value.isascii() and value.isdigit() and len(value) <= 9):
            abort(400)
        ids.append(int(value))
    return ids


def _local_next(default: str) -> str:
    """Where to go back after "Ajouter aux contacts": a local path only."""
    target = request.form.get("suivant", "")
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@bp.get("")
def index() -> str:
    """The list (search, group filter, pages), the add form, the groups, import and export."""
    text = book.clean_text(request.args.get("q", ""), 100)
    group_id = _int(request.args.get("groupe"), 0, 0, 10**9) or None
    page = _int(request.args.get("page"), 1, 1, 1000)
    with mss().db.transaction() as db:
        all_groups = book.groups(db, current_user.id)
        if group_id is not None and group_id not in {g.id for g in all_groups}:
            abort(404)
        rows, total = book.contacts(db, current_user.id, text=text, group_id=group_id,
                                    offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    return render_template("contacts/index.html", rows=rows, total=total, groups=all_groups,
                           text=text, group_id=group_id, page=page, per_page=PER_PAGE,
                           form={}, errors={})


@bp.post("")
def add() -> Response | tuple[str, int]:
    form = {k: request.form.get(k, "") for k in ("name", "address", "note")}
    groups = _group_ids()
    with mss().db.transaction() as db:
        try:
            row = book.add(db, current_user.id, name=form["name"], address=form["address"],
                           note=form["note"], group_ids=groups, local_domains=_domains())
        except book.NotFound:
            abort(404)
        except book.ContactError as exc:
            all_groups = book.groups(db, current_user.id)
            rows, total = book.contacts(db, current_user.id, limit=PER_PAGE)
            return render_template("contacts/index.html", rows=rows, total=total,
                                   groups=all_groups, text="", group_id=None, page=1,
                                   per_page=PER_PAGE, form=form, checked=set(groups),
                                   errors={"address": str(exc)}), 400
        record(db, "contact.add", "ok", target=row.address)
    flash(f"{row.address} ajouté à vos contacts.", "success")
    return redirect(url_for("contacts.index"))


@bp.post("/depuis")
def add_from() -> Response:
    """"Ajouter aux contacts" from a message or the directory (idempotent)."""
    back = _local_next(url_for("contacts.index"))
    with mss().db.transaction() as db:
        try:
            row, created = book.add_if_absent(db, current_user.id,
                                              name=request.form.get("name", ""),
                                              address=request.form.get("address", ""),
                                              local_domains=_domains())
        except book.ContactError as exc:
            flash(str(exc), "error")
            return redirect(back)
        if created:
            record(db, "contact.add", "ok", target=row.address, source="bouton")
    flash(f"{row.address} ajouté à vos contacts." if created
          else f"{row.address} est déjà dans vos contacts.", "success")
    return redirect(back)


@bp.route("/<int:contact_id>", methods=["GET", "POST"])
def edit(contact_id: int) -> Response | str | tuple[str, int]:
    with mss().db.transaction() as db:
        try:
            entry = book.contact(db, current_user.id, contact_id)
        except book.NotFound:
            abort(404)
        all_groups = book.groups(db, current_user.id)
        if request.method == "GET":
            form = {"name": entry.name, "address": entry.address, "note": entry.note}
            return render_template("contacts/edit.html", entry=entry, groups=all_groups,
                                   form=form, checked=set(entry.group_ids), errors={})
        form = {k: request.form.get(k, "") for k in ("name", "address", "note")}
        groups = _group_ids()
        try:
            row = book.update(db, current_user.id, contact_id, name=form["name"],
                              address=form["address"], note=form["note"], group_ids=groups,
                              local_domains=_domains())
        except book.NotFound:
            abort(404)
        except book.ContactError as exc:
            return render_template("contacts/edit.html", entry=entry, groups=all_groups,
                                   form=form, checked=set(groups),
                                   errors={"address": str(exc)}), 400
        record(db, "contact.update", "ok", target=row.address)
    flash("Contact enregistré.", "success")
    return redirect(url_for("contacts.index"))


@bp.post("/<int:contact_id>/supprimer")
def remove(contact_id: int) -> Response:
    with mss().db.transaction() as db:
        try:
            address = book.remove(db, current_user.id, contact_id)
        except book.NotFound:
            # Already gone (a double click) or never ours: nothing to do, same answer.
            flash("Ce contact n’existe plus.", "info")
            return redirect(url_for("contacts.index"))
        record(db, "contact.delete", "ok", target=address)
    flash(f"{address} retiré de vos contacts.", "success")
    return redirect(url_for("contacts.index"))


@bp.post("/groupes")
def create_group() -> Response:
    with mss().db.transaction() as db:
        try:
            row = book.create_group(db, current_user.id, request.form.get("name", ""))
        except book.ContactError as exc:
            flash(str(exc), "error")
            return redirect(url_for("contacts.index"))
        record(db, "contact.group_create", "ok", target=row.name)
    flash(f"Groupe « {row.name} » créé.", "success")
    return redirect(url_for("contacts.index", groupe=row.id))


@bp.post("/groupes/<int:group_id>")
def rename_group(group_id: int) -> Response:
    with mss().db.transaction() as db:
        try:
            row = book.rename_group(db, current_user.id, group_id, request.form.get("name", ""))
        except book.NotFound:
            abort(404)
        except book.ContactError as exc:
            flash(str(exc), "error")
            return redirect(url_for("contacts.index", groupe=group_id))
        record(db, "contact.group_rename", "ok", target=row.name)
    flash("Groupe renommé.", "success")
    return redirect(url_for("contacts.index", groupe=group_id))


@bp.post("/groupes/<int:group_id>/supprimer")
def remove_group(group_id: int) -> Response:
    with mss().db.transaction() as db:
        try:
            name = book.remove_group(db, current_user.id, group_id)
        except book.NotFound:
            flash("Ce groupe n’existe plus.", "info")
            return redirect(url_for("contacts.index"))
        record(db, "contact.group_delete", "ok", target=name)
    flash(f"Groupe « {name} » supprimé (ses contacts restent dans votre carnet).", "success")
    return redirect(url_for("contacts.index"))


@bp.get("/groupes/<int:group_id>/ecrire")
def write_to_group(group_id: int) -> Response:
    with mss().db.transaction() as db:
        try:
            addresses = book.group_addresses(db, current_user.id, group_id)
        except book.NotFound:
            abort(404)
    if not addresses:
        flash("Ce groupe est vide.", "info")
        return redirect(url_for("contacts.index", groupe=group_id))
    return redirect(url_for("mail.compose_new", a=", ".join(addresses)))


@bp.get("/export.vcf")
def export() -> Response:
    with mss().db.transaction() as db:
        text = book.export_vcard(db, current_user.id)
        record(db, "contact.export", "ok")
    response = Response(text, mimetype="text/vcard")
    response.headers["Content-Disposition"] = 'attachment; filename="contacts.vcf"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.post("/import")
def import_() -> Response:
    upload = request.files.get("fichier")
    if upload is None or not upload.filename:
        flash("Choisissez un fichier .vcf à importer.", "error")
        return redirect(url_for("contacts.index"))
    try:
        data = upload.stream.read(book.MAX_IMPORT_BYTES + 1)
    finally:
        upload.close()
    with mss().db.transaction() as db:
        try:
            report = book.import_vcard(db, current_user.id, data, local_domains=_domains())
        except book.ContactError as exc:
            flash(str(exc), "error")
            return redirect(url_for("contacts.index"))
        record(db, "contact.import", "ok", added=report.added, updated=report.updated,
               outside=len(report.outside), unreadable=report.unreadable)
    flash(_summary(report), "success" if report.added or report.updated else "info")
    return redirect(url_for("contacts.index"))


def _summary(report: book.ImportReport) -> str:
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count < 2 else many}"

    parts = [n(report.added, "contact ajouté", "contacts ajoutés")]
    if report.updated:
        parts.append(n(report.updated, "complété", "complétés"))
    if report.unchanged:
        parts.append(n(report.unchanged, "déjà présent", "déjà présents"))
    if report.groups_created:
        parts.append(n(report.groups_created, "groupe créé", "groupes créés"))
    text = "Import terminé : " + ", ".join(parts) + "."
    if report.outside:
        shown = ", ".join(report.outside[:5]) + (" …" if len(report.outside) > 5 else "")
        text += (f" {n(len(report.outside), 'adresse ignorée', 'adresses ignorées')} "
                 f"(hors de l’espace de confiance ou invalides : {shown}).")
    if report.unreadable:
        text += f" {n(report.unreadable, 'fiche illisible', 'fiches illisibles')}."
    if report.without_address:
        text += (f" {n(report.without_address, 'fiche sans adresse', 'fiches sans adresse')}"
                 " de messagerie.")
    if report.over_limit:
        text += f" Carnet plein ({book.MAX_CONTACTS} contacts) : {report.over_limit} non ajoutés."
    return text


def contact_offer(from_header: str) -> dict[str, str] | None:
    """The sender of a message read, offered as « Ajouter aux contacts » (a template global):
    None when the field holds no single readable address, or it is the reader's own, or
    already in their book. Whether it can be written to is checked when it is added."""
    if not current_user.is_authenticated or current_user.professional_id is None:
        return None
    found = email.utils.getaddresses([from_header or ""])
    if len(found) != 1 or not found[0][1] or "@" not in found[0][1]:
        return None
    name, address = book.clean_text(found[0][0], book.MAX_NAME), found[0][1].strip().lower()
    if address == current_user.login.lower():
        return None
    with mss().db.transaction() as db:
        if book.known(db, current_user.id, address):
            return None
    return {"name": name, "address": address}


def init_app(app: Any) -> None:
    from webmail import nav

    app.add_template_global(contact_offer, "contact_offer")
    app.register_blueprint(bp)
    nav.add(app, "contacts.index", "Contacts", order=25, prefix="/contacts",
            professional_only=True)
