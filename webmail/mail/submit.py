"""Sending through the gateway's submission port, like every other client (DESIGN.md, "The life
of a message", 1): the webmail authenticates as its SERVICE account ``webmail@<domain>``
(password in ``DATA_DIR/webmail.secret``) with the user as authorisation identity (AUTH PLAIN,
RFC 4616), over STARTTLS verified against the trust space's CA. The gateway then applies its
whole pipeline: sender rights, trust-space recipients, size, security, queue, Sent copy.

A refusal becomes a ``SubmissionRefused`` carrying a French sentence for the form and, when it
is about one recipient, that address.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import MssError
from core.settings import Settings
from mailformat.replies import parse_reply

log = logging.getLogger("mss.webmail.mail")

# Enhanced status codes (RFC 3463) → what the form says.
_MEANINGS = {
    "5.7.1": "refusé par la politique de l’espace de confiance",
    "5.7.5": "la protection demandée (signature ou chiffrement) est impossible",
    "5.3.4": "le message est trop volumineux",
    "4.5.3": "trop de destinataires",
    "4.7.1": "trop d’envois en peu de temps : réessayez dans une minute",
    "5.6.0": "la demande de sécurité est invalide",
    "5.4.6": "boucle de messagerie détectée",
    "5.7.8": "le service d’envoi de la messagerie n’est pas autorisé (configuration)",
}


class SubmissionRefused(MssError):
    """The gateway did not accept the message; ``message`` is for the form."""

    code = "submission_refused"

    def __init__(self, message: str, *, recipient: str | None = None,
                 reply: str = "") -> None:
        super().__init__(message)
        self.recipient = recipient
        self.reply = reply


@dataclass(frozen=True)
class Submitter:
    """The gateway's submission port, as the webmail's service account."""

    host: str
    port: int
    login: str
    password: str
    context: ssl.SSLContext
    timeout: float = 60.0

    @classmethod
    def for_settings(cls, settings: Settings) -> Submitter:
        context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
        host = settings.effective_submission_host
        secret = settings.data_dir / "webmail.secret"
        password = secret.read_text().strip() if secret.exists() else ""
        return cls(host, settings.submission_port, f"webmail@{settings.domain}", password,
                   context)

    def send(self, user: str, sender: str, recipients: Sequence[str], raw: bytes) -> str:
        """Submit ``raw`` from ``sender`` (a mailbox address) to ``recipients`` for ``user``
        (their login); the gateway's queue id.

        Raises:
            SubmissionRefused: refused by the gateway, or the gateway is unreachable.
        """
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.starttls(context=self.context)
                smtp.ehlo()  # RFC 3207 §4.2: forget what was known before TLS
                smtp.auth("PLAIN", lambda challenge=None: f"{user}\0{self.login}\0"
                          f"{self.password}", initial_response_ok=True)
                return self._transaction(smtp, sender, recipients, raw)
        except smtplib.SMTPAuthenticationError as exc:
            log.error("authentification du webmail refusée par la passerelle (%s)",
                      exc.smtp_code)
            reply = exc.smtp_error
            raise _refused(exc.smtp_code, reply if isinstance(reply, bytes) else
                           reply.encode()) from None
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("passerelle injoignable pour l'envoi (%s)", type(exc).__name__)
            raise SubmissionRefused("La passerelle d’envoi est momentanément injoignable ; "
                                    "votre message n’est pas parti. Réessayez dans un "
                                    "instant.") from None

    @staticmethod
    def _transaction(smtp: smtplib.SMTP, sender: str, recipients: Sequence[str],
                     raw: bytes) -> str:
        code, text = smtp.mail(sender)
        if code != 250:
            raise _refused(code, text, what="L’expéditeur")
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            if code not in (250, 251):
                smtp.rset()
                raise _refused(code, text, recipient=rcpt)
        code, text = smtp.data(raw)
        if code != 250:
            raise _refused(code, text)
        return text.decode("utf-8", "replace").rsplit(" ", 1)[-1]


def _refused(code: int, text: bytes, *, recipient: str | None = None,
             what: str = "Le message") -> SubmissionRefused:
    """The French sentence for a refusal reply (the gateway's own text follows, in brackets:
    its French half, folded to ASCII by SMTP)."""
    reply = text.decode("utf-8", "replace")
    parsed = parse_reply(reply)  # smtplib took the code off: "5.7.1 text" or just text
    enhanced, human = parsed.enhanced, parsed.text
    meaning = _MEANINGS.get(enhanced, "refusé par la passerelle")
    subject = f"Le destinataire « {recipient} »" if recipient else what
    verb = "est refusé" if recipient or what != "Le message" else "n’a pas été accepté"
    detail = human.split(" / ")[0].strip()
    message = f"{subject} {verb} : {meaning}"
    if detail:
        message += f" (passerelle : {detail})"
    if code < 500:
        message += ". Erreur temporaire : réessayez plus tard"
    return SubmissionRefused(message + ". Rien n’a été envoyé.", recipient=recipient,
                             reply=f"{code} {reply}"[:200])
