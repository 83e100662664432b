"""The pages « Réponse automatique » and « Filtres » of a mailbox (``webmail.mail.mailrules``
keeps the settings and installs the script). Plain forms that POST and redirect: no script
needed. Every refusal is a French sentence on the form, the values kept.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from mailstore.managesieve import SieveError
from mailstore.sievescript import ACTIONS, FIELDS, MAX_DAYS, ScriptError, check_line
from webmail.errors import Forbidden
from webmail.mail import bp
from webmail.mail.access import Box, Right, accessible_boxes, audit, imap, mailbox_route
from webmail.mail.folders import box_folders, label
from webmail.mail.mailrules import (
    BODY_MAX,
    MAX_FILTERS,
    SUBJECT_MAX,
    TEXT_MAX,
    Filter,
    ForeignScript,
    Settings,
    active_script,
    foreign,
    load,
    may_manage,
    save,
    today,
    with_filters,
)

FIELD_FR = {"from": "l’expéditeur", "subject": "l’objet", "to": "les destinataires (À, Cc)"}
ACTION_FR = {"move": "Déplacer vers le dossier", "read": "Marquer comme lu",
             "flag": "Marquer d’un drapeau"}
_ID = re.compile(r"^[0-9a-f]{12}$")
UNAVAILABLE = ("Le serveur de filtres ne répond pas ; rien n’a été modifié. Réessayez dans "
               "un instant.")


def _managed(box: Box) -> Box:
    if not may_manage(box):
        audit("mail.rules.access", box, "forbidden")
        raise Forbidden(f"Votre rôle ({box.role_label}) ne permet pas de régler la réponse "
                        "automatique ni les filtres de cette boîte : seuls ses "
                        "administrateurs le peuvent.")
    return box


def _foreign_name(box: Box) -> tuple[str | None, bool]:
    """(the active script when it is not the webmail's, whether ManageSieve answered)."""
    try:
        name = active_script(box)
    except SieveError:
        return None, False
    return (name if foreign(name) else None), True


# ---------------------------------------------------------------------- out-of-office
@bp.get("/<int:box_id>/reponse-automatique")
@mailbox_route(Right.READ)
def autoreply(box: Box, folder: str) -> str:
    _managed(box)
    settings = load(box)
    return _autoreply_page(box, settings, {})


def _autoreply_page(box: Box, settings: Settings, errors: dict[str, str],
                    values: dict[str, str] | None = None, status: int = 200) -> Any:
    other, reachable = _foreign_name(box)
    form = values if values is not None else {
        "actif": "1" if settings.vacation_on else "",
        "debut": f"{settings.start:%d/%m/%Y}" if settings.start else "",
        "fin": f"{settings.end:%d/%m/%Y}" if settings.end else "",
        "objet": settings.subject or "Absence", "message": settings.body,
        "jours": str(settings.days)}
    with imap() as session:
        folders = box_folders(session, box)
    page = render_template("mail/autoreply.html", box=box, boxes=accessible_boxes(),
                           folders=folders, folder="", folder_label="Réponse automatique",
                           form=form, errors=errors, foreign=other,
                           reachable=reachable, max_days=MAX_DAYS, subject_max=SUBJECT_MAX,
                           body_max=BODY_MAX)
    return (page, status) if status != 200 else page


@bp.post("/<int:box_id>/reponse-automatique")
@mailbox_route(Right.READ)
def save_autoreply(box: Box, folder: str) -> Any:
    _managed(box)
    values = {k: request.form.get(k, "") for k in ("actif", "debut", "fin", "objet",
                                                   "message", "jours")}
    current = load(box)
    settings, errors = _vacation_from(values, current)
    if errors:
        return _autoreply_page(box, current, errors, values, 400)
    outcome = _save(box, settings)
    if outcome is not None:
        return _autoreply_page(box, current, {"_": outcome}, values, 409
                               if "remplacer" in outcome else 503)
    audit("mail.autoreply", box, enabled=settings.vacation_on, days=settings.days,
          start=settings.start.isoformat() if settings.start else "",
          end=settings.end.isoformat() if settings.end else "")
    flash("Réponse automatique activée." if settings.vacation_on else
          "Réponse automatique désactivée.", "success")
    return redirect(url_for("mail.autoreply", box_id=box.id))


def _vacation_from(values: dict[str, str], current: Settings) -> tuple[Settings, dict[str, str]]:
    errors: dict[str, str] = {}
    on = values["actif"] == "1"
    start, end = _date(values["debut"], "debut", errors), _date(values["fin"], "fin", errors)
    subject = " ".join(values["objet"].split())
    body = values["message"].replace("\r\n", "\n").strip("\n")
    typed = values["jours"].strip()
    days = int(typed) if typed.isascii() and typed.isdigit() and len(typed) < 4 else 0
    if not 1 <= days <= MAX_DAYS:
        errors["jours"] = f"Indiquez un nombre de jours entre 1 et {MAX_DAYS}."
    if start and end and end < start:
        errors["fin"] = "La date de fin précède la date de début."
    elif on and end and end < today():
        errors["fin"] = "La date de fin est déjà passée."
    if on and not subject:
        errors["objet"] = "Indiquez l’objet de la réponse."
    elif len(subject) > SUBJECT_MAX:
        errors["objet"] = f"L’objet est trop long ({SUBJECT_MAX} caractères au plus)."
    if on and not body.strip():
        errors["message"] = "Écrivez le message de la réponse."
    elif len(body) > BODY_MAX:
        errors["message"] = f"Le message est trop long ({BODY_MAX} caractères au plus)."
    for key, value in (("objet", subject), ("message", body.replace("\n", " "))):
        try:
            check_line(value.replace("\t", " "), key)
        except ScriptError:
            errors.setdefault(key, "Caractère non autorisé (caractère de contrôle).")
    return replace(current, vacation_on=on, start=start, end=end, subject=subject, body=body,
                   days=days or current.days), errors


def _date(value: str, key: str, errors: dict[str, str]) -> date | None:
    """A date as French readers write it, 12/12/2026 (or 2026-12-12, ISO 8601)."""
    text = value.strip()
    if not text:
        return None
    for pattern in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            found = datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        if 2000 <= found.year <= 2100:
            return found
    errors[key] = "Date invalide : écrivez-la sous la forme jj/mm/aaaa."
    return None


def _save(box: Box, settings: Settings) -> str | None:
    """None once installed, else the sentence for the form."""
    try:
        save(box, settings, replace_foreign=request.form.get("remplacer") == "1")
    except ForeignScript as exc:
        audit("mail.rules.save", box, "foreign_script")
        return (f"Un autre script de filtrage (« {exc.name} »), installé depuis un autre "
                "logiciel, est actif sur cette boîte. Cochez « Remplacer le script actif » "
                "pour le remplacer : il sera conservé, mais désactivé.")
    except ScriptError as exc:
        return str(exc)
    except SieveError as exc:
        audit("mail.rules.save", box, "refused", code=exc.code)
        return UNAVAILABLE
    return None


# ---------------------------------------------------------------------- filters
@bp.get("/<int:box_id>/filtres")
@mailbox_route(Right.READ)
def filters(box: Box, folder: str) -> str:
    _managed(box)
    settings = load(box)
    editing = next((f for f in settings.filters if f.id == request.args.get("modifier")), None)
    return _filters_page(box, settings, editing, {})


def _filters_page(box: Box, settings: Settings, editing: Filter | None,
                  errors: dict[str, str], values: dict[str, str] | None = None,
                  status: int = 200) -> Any:
    other, reachable = _foreign_name(box)
    with imap() as session:
        folders = box_folders(session, box)
    form = values if values is not None else (
        {"champ": editing.field, "texte": editing.text, "action": editing.action,
         "dossier_cible": editing.folder, "id": editing.id} if editing else
        {"champ": "from", "texte": "", "action": "move", "dossier_cible": "", "id": ""})
    page = render_template("mail/filters.html", box=box, boxes=accessible_boxes(),
                           folder="", folder_label="Filtres", settings=settings, form=form,
                           errors=errors,
                           editing=bool(form.get("id")), foreign=other, reachable=reachable,
                           folders=folders,
                           targets=[f for f in folders if f.name not in ("Drafts", "Trash")],
                           fields=FIELD_FR, actions=ACTION_FR, label=label,
                           text_max=TEXT_MAX, max_filters=MAX_FILTERS)
    return (page, status) if status != 200 else page


@bp.post("/<int:box_id>/filtres")
@mailbox_route(Right.READ)
def change_filters(box: Box, folder: str) -> Any:
    _managed(box)
    settings = load(box)
    operation = request.form.get("operation", "")
    rule_id = request.form.get("id", "")
    if rule_id and not _ID.match(rule_id):
        rule_id = "-"
    filters_now = list(settings.filters)
    index = next((i for i, f in enumerate(filters_now) if f.id == rule_id), None)
    if operation in ("delete", "up", "down", "update") and index is None:
        flash("Ce filtre n’existe plus (déjà supprimé ?).", "error")
        return redirect(url_for("mail.filters", box_id=box.id))
    if operation in ("add", "update"):
        values = {k: request.form.get(k, "") for k in ("champ", "texte", "action",
                                                       "dossier_cible", "id")}
        rule, errors = _filter_from(box, values, filters_now, index)
        if errors:
            return _filters_page(box, settings, None, errors, values, 400)
        assert rule is not None
        if index is None:
            filters_now.append(rule)
        else:
            filters_now[index] = replace(rule, id=filters_now[index].id)
    elif operation == "delete":
        assert index is not None
        del filters_now[index]
    elif operation in ("up", "down"):
        assert index is not None
        other = index - 1 if operation == "up" else index + 1
        if 0 <= other < len(filters_now):
            filters_now[index], filters_now[other] = filters_now[other], filters_now[index]
    else:
        flash("Opération inconnue.", "error")
        return redirect(url_for("mail.filters", box_id=box.id))
    new = with_filters(settings, filters_now)
    outcome = _save(box, new)
    if outcome is not None:
        return _filters_page(box, settings, None, {"_": outcome}, None,
                             409 if "remplacer" in outcome.lower() else 503)
    audit("mail.filters", box, operation=operation, count=len(filters_now))
    flash({"add": "Filtre ajouté.", "update": "Filtre modifié.", "delete": "Filtre supprimé.",
           }.get(operation, "Ordre des filtres modifié."), "success")
    return redirect(url_for("mail.filters", box_id=box.id))


def _filter_from(box: Box, values: dict[str, str], existing: list[Filter],
                 index: int | None) -> tuple[Filter | None, dict[str, str]]:
    errors: dict[str, str] = {}
    field, action = values["champ"], values["action"]
    text = " ".join(values["texte"].split())
    target = values["dossier_cible"].strip() if action == "move" else ""
    if field not in FIELDS:
        errors["champ"] = "Choisissez où chercher."
    if action not in ACTIONS:
        errors["action"] = "Choisissez une action."
    if not text:
        errors["texte"] = "Indiquez le texte à chercher."
    elif len(text) > TEXT_MAX:
        errors["texte"] = f"Texte trop long ({TEXT_MAX} caractères au plus)."
    else:
        try:
            check_line(text, "texte")
        except ScriptError:
            errors["texte"] = "Caractère non autorisé (caractère de contrôle)."
    if action == "move":
        with imap() as session:
            names = {f.name for f in box_folders(session, box)}
        if target not in names or target in ("Drafts", "Trash"):
            errors["dossier_cible"] = "Choisissez un dossier existant de cette boîte."
    if index is None and len(existing) >= MAX_FILTERS:
        errors["_"] = f"{MAX_FILTERS} filtres au plus par boîte."
    rule = Filter(field, text, action, target)
    if any((f.field, f.text, f.action, f.folder) == (field, text, action, target)
           for i, f in enumerate(existing) if i != index):
        errors["_"] = "Ce filtre existe déjà."
    return (None if errors else rule), errors
