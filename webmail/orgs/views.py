"""Boîtes organisationnelles: their collaborators and roles, managed by their administrators.

Rights are checked by ``trust_space.collaborators`` on every action, whatever the page showed;
a mailbox on which the user has no delegation does not exist for them (404). After a change
the mail store's ACLs are regenerated so that IMAP rights follow at once.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from core.errors import MssError, NotFound
from trust_space import collaborators, directory
from trust_space.accounts import find_professional
from trust_space.models import Delegation, Mailbox, MailboxKind, Professional, Role
from webmail import nav
from webmail.context import mss, record
from webmail.forms import EmptyForm
from webmail.orgs.forms import CollaboratorAddForm, CollaboratorRoleForm, CollaboratorSearchForm

log = logging.getLogger("mss.webmail")
bp = Blueprint("orgs", __name__, url_prefix="/organisations")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    nav.add(app, "orgs.index", "Boîtes organisationnelles", order=60, prefix="/organisations",
            professional_only=True)


@bp.before_request
@login_required
def _require_login() -> None:
    """Every page of this blueprint needs a logged-in user."""


def _mailbox(db: Session, mailbox_id: int) -> tuple[Mailbox, Role]:
    """The organisational mailbox and the user's role on it.

    Raises:
        NotFound: no such mailbox, or the user has no delegation on it.
    """
    mailbox = db.get(Mailbox, mailbox_id)
    role = collaborators.role_of(db, mailbox, current_user.professional_id) if mailbox else None
    if mailbox is None or mailbox.kind is not MailboxKind.ORGANISATIONAL or role is None:
        raise NotFound("Boîte organisationnelle introuvable.")
    return mailbox, role


@bp.get("")
def index() -> str:
    with mss().db.transaction() as db:
        rows = db.scalars(select(Delegation).join(Mailbox).where(
            Delegation.professional_id == current_user.professional_id,
            Mailbox.kind == MailboxKind.ORGANISATIONAL).order_by(Mailbox.display_name)).all() \
            if current_user.professional_id else []
        return render_template("orgs/index.html", rows=rows, roles=collaborators.ROLE_FR)


@bp.get("/<int:mailbox_id>")
def detail(mailbox_id: int) -> str:
    search = CollaboratorSearchForm(formdata=request.args)
    with mss().db.transaction() as db:
        mailbox, role = _mailbox(db, mailbox_id)
        members = collaborators.collaborators(db, mailbox)
        results = _search(db, search.q.data, {d.professional_id for d in members}) \
            if role is Role.ADMINISTRATOR and search.q.data else None
        return render_template(
            "orgs/detail.html", mailbox=mailbox, role=role, members=members, search=search,
            results=results, add_form=CollaboratorAddForm(), role_form=CollaboratorRoleForm(),
            form=EmptyForm(), roles=collaborators.ROLE_FR, is_admin=role is Role.ADMINISTRATOR)


def _search(db: Session, text: str | None, exclude: set[int]) -> list[directory.DirectoryEntry]:
    """Personal mailboxes of the directory matching ``text``, without current members."""
    found = directory.search(db, text=text, kind=MailboxKind.PERSONAL, limit=20)
    members = set(db.scalars(select(Mailbox.address).where(
        Mailbox.professional_id.in_(exclude), Mailbox.kind == MailboxKind.PERSONAL))) \
        if exclude else set()
    return [entry for entry in found if entry.address not in members]


def _done(mailbox_id: int, message: str) -> Response:
    try:
        mss().acl_sync()
    except (MssError, OSError):
        log.exception("synchronisation des ACL du magasin de courrier en échec")
    flash(message, "success")
    return redirect(url_for("orgs.detail", mailbox_id=mailbox_id))


@bp.post("/<int:mailbox_id>/collaborateurs")
def add(mailbox_id: int) -> Response:
    form = CollaboratorAddForm()
    if not form.validate_on_submit():
        flash("Choisissez un professionnel dans l'annuaire et un rôle.", "error")
        return redirect(url_for("orgs.detail", mailbox_id=mailbox_id))
    with mss().db.transaction() as db:
        mailbox, _role = _mailbox(db, mailbox_id)
        professional, _address = find_professional(db, form.address.data)
        collaborators.set_role(db, current_user.professional_id, mailbox, professional,
                               form.role.data)
        record(db, "org.collaborator_add", "ok", target=mailbox.address,
               collaborator=form.address.data, role=form.role.data)
        name = professional.display_name
    return _done(mailbox_id, f"{name} est maintenant collaborateur "
                             f"({collaborators.ROLE_FR[Role(form.role.data)]}).")


def _member(db: Session, professional_id: int) -> Professional:
    professional = db.get(Professional, professional_id)
    if professional is None:
        raise NotFound("Collaborateur introuvable.")
    return professional


@bp.post("/<int:mailbox_id>/collaborateurs/<int:professional_id>/role")
def change_role(mailbox_id: int, professional_id: int) -> Response:
    form = CollaboratorRoleForm()
    if not form.validate_on_submit():
        return redirect(url_for("orgs.detail", mailbox_id=mailbox_id))
    try:
        with mss().db.transaction() as db:
            mailbox, _role = _mailbox(db, mailbox_id)
            professional = _member(db, professional_id)
            if collaborators.role_of(db, mailbox, professional.id) is None:
                raise NotFound("Ce professionnel ne collabore pas à cette boîte.")
            collaborators.set_role(db, current_user.professional_id, mailbox, professional,
                                   form.role.data)
            record(db, "org.collaborator_role", "ok", target=mailbox.address,
                   collaborator=professional.national_id, role=form.role.data)
            name = professional.display_name
    except collaborators.LastAdministrator as exc:
        return _refused(mailbox_id, exc)
    return _done(mailbox_id, f"Rôle de {name} : {collaborators.ROLE_FR[Role(form.role.data)]}.")


def _refused(mailbox_id: int, exc: MssError) -> Response:
    """A change the rules refuse (the last administrator): said on the page, in its words,
    instead of a bare "Code 409" (issue #15 item 9)."""
    flash(exc.message, "error")
    return redirect(url_for("orgs.detail", mailbox_id=mailbox_id))


@bp.get("/<int:mailbox_id>/collaborateurs/<int:professional_id>/retirer")
def confirm_remove(mailbox_id: int, professional_id: int) -> str:
    """"Retirer": a confirmation page first, as for every action that takes access away."""
    with mss().db.transaction() as db:
        mailbox, _role = _mailbox(db, mailbox_id)
        collaborators.require_administrator(db, mailbox, current_user.professional_id)
        professional = _member(db, professional_id)
        if collaborators.role_of(db, mailbox, professional.id) is None:
            raise NotFound("Ce professionnel ne collabore pas à cette boîte.")
        return render_template("orgs/remove.html", mailbox=mailbox, professional=professional,
                               form=EmptyForm())


@bp.post("/<int:mailbox_id>/collaborateurs/<int:professional_id>/retirer")
def remove(mailbox_id: int, professional_id: int) -> Response:
    if not EmptyForm().validate_on_submit() or request.form.get("confirmer") != "oui":
        return redirect(url_for("orgs.confirm_remove", mailbox_id=mailbox_id,
                                professional_id=professional_id))
    try:
        with mss().db.transaction() as db:
            mailbox, _role = _mailbox(db, mailbox_id)
            professional = _member(db, professional_id)
            collaborators.remove(db, current_user.professional_id, mailbox, professional)
            record(db, "org.collaborator_remove", "ok", target=mailbox.address,
                   collaborator=professional.national_id)
            name = professional.display_name
    except collaborators.LastAdministrator as exc:
        return _refused(mailbox_id, exc)
    return _done(mailbox_id, f"{name} ne collabore plus à cette boîte.")
