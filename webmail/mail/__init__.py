"""The mail itself: folders and message lists, reading, composing, search, the directory and
the delivery timeline (issue "Webmail, part 2").

Blueprints: ``mail`` (``/courrier``) and ``directory`` (``/annuaire``). Every view that takes a
mailbox id is authorised by ``webmail.mail.access.mailbox_route`` (one decorator, checked on
the server for every request); the views open the user's own IMAP session from a shared pool
(``mailstore.pool``) and send through the gateway (``webmail.mail.submit``).

Views are split by area: ``folders`` (lists, folder management), ``actions`` (read/unread,
move, delete, restore, empty the Corbeille), ``read`` (a message, its body, attachments,
read receipt), ``compose``, ``search``, ``directory``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, render_template
from flask_login import current_user, login_required
from werkzeug.routing import IntegerConverter, Map

from mailstore.errors import ImapAuthFailed, MailboxNotFound, MailstoreError
from webmail import nav

log = logging.getLogger("mss.webmail.mail")
bp = Blueprint("mail", __name__, url_prefix="/courrier")
PER_PAGE = 50
# RFC 9051 §2.3.1.1: a message UID is a non-zero 32-bit number.
MAX_UID = 2**32 - 1


class UidConverter(IntegerConverter):
    """``<uid:uid>`` in a route: an IMAP UID, 1 to 2³²−1, else the URL matches nothing (404),
    instead of reaching the store with a UID it must refuse."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_UID)


def imap_uid(value: str | None) -> int | None:
    """A UID from a form or query value (``brouillon=``, ``uid``…), None when it is not one
    (only ASCII digits: ``"²".isdigit()`` is true but ``int("²")`` fails)."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    uid = int(text)
    return uid if 1 <= uid <= MAX_UID else None


def init_app(app: Flask) -> None:
    """Register the mail and directory blueprints and their navigation entries."""
    from webmail.mail import (  # noqa: F401
        actions,
        bulk,
        compose,
        conversations,
        directory,
        exports,
        folders,
        mailrules,  # Réponse automatique, Filtres
        preferences,
        protection,
        read,
        rules,
        search,
        unread,
    )

    # First of all: the compose POST may carry attachments beyond MAX_CONTENT_LENGTH, and
    # the CSRF check (an earlier before_request) reads the form.
    app.before_request_funcs.setdefault(None, []).insert(0, compose.raise_upload_limit)
    app.request_class = compose.UploadRequest  # attachments past the limit: form kept
    app.url_map.converters["uid"] = UidConverter  # before the routes that use it
    from webmail.mail import live, notify  # noqa: F401  new mail live, desktop notifications
    app.register_blueprint(bp)
    app.register_blueprint(directory.bp)
    live.init_app(app)  # /courrier/evenements, /courrier/<id>/etat
    app.add_template_global(notify.notify_choices, "notify_choices")
    nav.add(app, "mail.index", "Courrier", order=10, prefix="/courrier",
            professional_only=True, count=unread.total_unread)
    app.add_template_global(unread.inbox_unread, "inbox_unread")
    app.add_template_global(mailrules.banner, "autoreply_banner")
    app.add_template_global(mailrules.may_manage, "may_manage_rules")
    app.add_template_global(preferences.choices, "list_choices")
    nav.add(app, "directory.index", "Annuaire", order=20, prefix="/annuaire",
            professional_only=True)


@bp.before_request
@login_required
def _require_login() -> None:
    """Every mail page needs a logged-in user (rights are checked per mailbox)."""
    if current_user.professional_id is None:
        from webmail.errors import Forbidden

        raise Forbidden("La messagerie est réservée aux professionnels ; ce compte n’a pas de "
                        "boîte aux lettres.")


@bp.app_template_filter("pluriel")
def plural_fr(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` and the word that agrees with it, as French writes it: 0 and 1 take the
    singular ("1 message", "0 message", "3 messages"); ``plural`` for irregular words."""
    word = singular if abs(count) < 2 else (plural or singular + "s")
    return f"{count} {word}"


@bp.app_template_filter("taille")
def size_fr(size: int) -> str:
    """A size as French readers write it: ``820 octets``, ``5,6 ko``, ``2,1 Mo``."""
    if size < 1024:
        return f"{size} octets"
    value = size / 1024
    for unit in ("ko", "Mo"):
        if value < 1024:
            return f"{value:.1f} {unit}".replace(".", ",")
        value /= 1024
    return f"{value:.1f} Go".replace(".", ",")


@bp.errorhandler(MailstoreError)
def _store_error(exc: MailstoreError) -> tuple[str, int]:
    """Mail-store errors as pages: a missing folder or message is a 404; a refused session a
    403; anything else means the store is unavailable (503)."""
    if isinstance(exc, MailboxNotFound):
        status, title, text = 404, "Introuvable", "Ce dossier ou ce message n’existe pas."
    elif isinstance(exc, ImapAuthFailed):
        status, title, text = 403, "Accès refusé", "Le serveur de messagerie refuse l’accès " \
                                                   "à cette boîte."
    else:
        log.warning("magasin de courrier en erreur : %s", exc.code)
        status, title = 503, "Messagerie momentanément indisponible"
        text = "Le serveur de messagerie ne répond pas comme attendu ; réessayez dans un instant."
    return render_template("error.html", title=title, message=text, status=status), status
