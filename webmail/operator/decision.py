"""The operator's decision on a registration, shared by the operator page and the
``mss account validate|refuse`` commands: change the trust space, audit, then tell the
professional at their usual address. No Flask here."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from certs.pki import Pki
from core import audit
from core.db import Database
from core.errors import MssError, NotFound
from core.mailer import SIGNATURE, Mailer, build_mail
from core.settings import Settings
from trust_space import registration
from trust_space.models import Mailbox

log = logging.getLogger("mss.webmail")


def certificate_issuer(settings: Settings) -> Callable[[Session, Mailbox], None]:
    """Issue a mailbox's S/MIME certificate (key encrypted at rest with the data directory's
    secret), as the demo does for its mailboxes."""
    secret = settings.secret()
    pki = Pki.load(settings.pki_dir, password=secret)

    def issue(session: Session, mailbox: Mailbox) -> None:
        issued = pki.issue_mailbox(session, mailbox.address, mailbox.display_name)
        mailbox.smime_cert_pem = issued.cert_pem().decode()
        mailbox.smime_key_pem = issued.key_pem(secret).decode()

    return issue


REASON_MAX = 1000  # characters of a refusal's reason


def clean_reason(text: str) -> str:
    """A refusal's reason as it will be mailed: line ends made \\n, other control characters
    dropped (no header or layout tricks in the applicant's mail), at most ``REASON_MAX``."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = ["".join(c for c in line if c.isprintable()).rstrip() for line in lines]
    return "\n".join(kept).strip()[:REASON_MAX]


def decide(db: Database, settings: Settings, mailer: Mailer, address: str, *, accept: bool,
           actor: str, webmail_url: str, reason: str = "", store: str = "") -> list[str]:
    """Validate (publish) or refuse the registration ``address`` belongs to; e-mail the
    professional (a refusal with ``reason`` and the operator's contact). Returns the
    addresses concerned. ``store``: the mail store (``MSS_MAIL_STORES``) the validated
    mailboxes are placed on; empty: the default one.

    Raises:
        NotFound: no registration pending for ``address``.
        ConfigError: ``store`` is not a configured mail store.
    """
    from mailstore import stores

    if store:
        stores.check_store(settings, store)
    issue = certificate_issuer(settings) if accept else None
    with db.transaction() as session:
        pending = registration.find_pending(session, address)
        if pending is None:
            raise NotFound(f"Aucune inscription en attente pour « {address} ».")
        addresses = (registration.validate(session, pending, issue) if accept
                     else registration.refuse(session, pending))
        if accept and store:
            for placed in addresses:
                stores.place(session, settings, placed, store)
        to = pending.professional.usual_email
        audit.record(session, actor=actor, action="registration." +
                     ("validate" if accept else "refuse"), target=addresses[0],
                     outcome="ok", request={"addresses": addresses, **(
                         {"store": store} if accept and store else {}), **(
                         {} if accept else {"reason": reason, "mailed": bool(to)})})
    subject, text = (validated_text(addresses, webmail_url) if accept else
                     refused_text(reason, settings.effective_operator_contact))
    if to:
        _send(mailer, to, settings, subject, text)
    return addresses


def _send(mailer: Mailer, to: str, settings: Settings, subject: str, text: str) -> None:
    """Best effort: the decision stands even if the e-mail cannot leave now."""
    try:
        mailer.send(to, build_mail(to=to, sender=f"ne-pas-repondre@{settings.domain}",
                                   subject=subject, text=text))
    except (MssError, OSError):
        log.exception("courriel d'inscription non envoyé")


def validated_text(addresses: list[str], url: str) -> tuple[str, str]:
    """Subject and text announcing a validated registration."""
    lines = "\n".join(f"  - {a}" for a in addresses)
    return ("Votre messagerie sécurisée est ouverte",
            "Bonjour,\n\nVotre inscription a été validée. Vos adresses sécurisées :\n"
            f"{lines}\n\nConnectez-vous à votre messagerie : {url}" + SIGNATURE)


def refused_text(reason: str, contact: str) -> tuple[str, str]:
    """Subject and text announcing a refused registration: the operator's reason (issue #15
    item 4) and how to reach them."""
    why = (f"Motif indiqué par l'opérateur :\n\n{_quoted(reason)}\n\n" if reason.strip()
           else "")
    return ("Votre demande de messagerie sécurisée",
            "Bonjour,\n\nVotre demande d'ouverture de messagerie sécurisée n'a pas pu être "
            f"validée.\n\n{why}Pour toute question, ou pour déposer une nouvelle demande, "
            f"contactez votre opérateur : {contact}" + SIGNATURE)


def _quoted(text: str) -> str:
    return "\n".join(f"    {line}".rstrip() for line in text.strip().splitlines())
