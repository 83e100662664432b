"""Annuaire: search the trust space's directory (published mailboxes only, liste rouge
excluded — ``trust_space.directory.search``), local and peer operators alike; "Écrire" starts
a message. ``/annuaire/suggestions`` is the small JSON endpoint the recipient fields'
autocompletion calls (``static/mail.js``)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from trust_space import directory as trust_directory
from trust_space.directory import DirectoryEntry
from trust_space.models import MailboxKind
from webmail.contacts import book as contacts_book
from webmail.context import mss

bp = Blueprint("directory", __name__, url_prefix="/annuaire")
FIELDS = (("nom", "name", "Nom ou structure"), ("profession", "profession", "Profession"),
          ("specialite", "specialty", "Spécialité"), ("ville", "city", "Ville"),
          ("cp", "postal_code", "Code postal ou département"), ("rpps", "rpps", "N° RPPS"))
KIND_FR = {MailboxKind.PERSONAL: "Personnelle", MailboxKind.ORGANISATIONAL: "Organisationnelle",
           MailboxKind.APPLICATIVE: "Applicative"}
SUGGESTIONS = 8


@bp.before_request
@login_required
def _require_login() -> None:
    """The directory is for logged-in users only."""


def _criteria() -> dict[str, str]:
    return {key: request.args.get(arg, "").strip()[:100] for arg, key, _ in FIELDS
            if request.args.get(arg, "").strip()}


@bp.get("")
def index() -> str:
    """The search form and its results."""
    criteria = _criteria()
    results: list[DirectoryEntry] = []
    if criteria:
        if "rpps" in criteria and not criteria["rpps"].isdigit():
            criteria["rpps"] = "-"  # matches nothing, as a wrong number should
        with mss().db.transaction() as db:
            results = trust_directory.search(
                db, name=criteria.get("name"), profession=criteria.get("profession"),
                specialty=criteria.get("specialty"), city=criteria.get("city"),
                postal_code=criteria.get("postal_code"), rpps=criteria.get("rpps"), limit=100)
    return render_template("mail/directory.html", fields=FIELDS, values=request.args,
                           results=results, searched=bool(criteria), kinds=KIND_FR)


@bp.get("/suggestions")
def suggestions() -> Response:
    """Up to eight suggestions for ``q`` (2 characters at least), as JSON
    ``[{"address", "name", "detail", "label"?}]``: the person's own groups and contacts first
    (``webmail.contacts.book.suggest``; a group's address is its members' list), then the
    published mailboxes of the directory."""
    text = request.args.get("q", "").strip()[:100]
    if len(text) < 2:
        return jsonify([])
    with mss().db.transaction() as db:
        own = contacts_book.suggest(db, current_user.id, text)
        found = trust_directory.search(db, text=text, limit=SUGGESTIONS)
    known = {s["address"] for s in own}
    return jsonify((own + [{"address": e.address, "name": e.display_name,
                            "detail": ", ".join(filter(None, [e.profession, e.specialty,
                                                              e.city]))}
                           for e in found if e.address not in known])[:SUGGESTIONS])
