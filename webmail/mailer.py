"""E-mails the webmail sends to a professional's usual (non-secure) address: one-time codes and
registration news. They leave the trust space: no patient data, ever.

Sending goes through a ``Mailer`` (CONVENTIONS.md, 3). ``mss run`` injects the gateway's
``SmtpNotifier`` (the smarthost, ``MSS_SMARTHOST``); without a smarthost the webmail falls back
to ``FileMailer``, which drops the messages in ``DATA_DIR/spool/mail`` (demo, development).
"""

from __future__ import annotations

import email.policy
import email.utils
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Protocol

from core.spool import FileSpool

SENDER_NAME = "Messagerie sécurisée de santé"


class Mailer(Protocol):
    """Hands an e-mail to a transport."""

    def send(self, to: str, message: bytes) -> None:
        """Send ``message`` (RFC 5322 bytes) to ``to``.

        Raises:
            core.errors.MssError: the message was not accepted (the caller tells the user).
            OSError: the transport could not be reached.
        """
        ...


# The file stand-in of the smarthost, shared with the gateway's notices (core.spool).
FileMailer = FileSpool


def build_mail(*, to: str, sender: str, subject: str, text: str) -> bytes:
    """A plain-text UTF-8 message, marked auto-generated (RFC 3834 §5)."""
    message = EmailMessage(policy=email.policy.SMTP)
    local, _, domain = sender.rpartition("@")
    message["From"] = Address(SENDER_NAME, local, domain)
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    message["Message-ID"] = email.utils.make_msgid("mss", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


SIGNATURE = ("\n\nCe courriel est envoyé automatiquement par votre messagerie sécurisée de santé ; "
             "merci de ne pas y répondre.\n")


def code_text(code: str, minutes: int) -> tuple[str, str]:
    """Subject and text of the one-time code e-mail."""
    return ("Votre code de connexion",
            f"Bonjour,\n\nVotre code de connexion à la messagerie sécurisée de santé est :\n\n"
            f"    {code}\n\nIl est valable {minutes} minutes et ne sert qu'une fois. Si vous "
            "n'êtes pas à l'origine de cette demande, changez votre mot de passe."
            + SIGNATURE)


def registration_code_text(code: str, minutes: int) -> tuple[str, str]:
    """Subject and text of the code that proves who registers with an RPPS/ADELI number."""
    return ("Votre code d'inscription",
            "Bonjour,\n\nUne inscription à la messagerie sécurisée de santé est en cours avec "
            f"votre numéro professionnel. Le code qui la confirme est :\n\n    {code}\n\nIl "
            f"est valable {minutes} minutes et ne sert qu'une fois. Si vous n'êtes pas à "
            "l'origine de cette demande, ignorez ce message : rien ne sera créé." + SIGNATURE)


def registration_text(addresses: list[str]) -> tuple[str, str]:
    """Subject and text confirming a registration request."""
    lines = "\n".join(f"  - {a}" for a in addresses)
    return ("Votre demande d'ouverture de messagerie sécurisée",
            "Bonjour,\n\nVotre demande d'ouverture de boîte aux lettres sécurisée a bien été "
            f"enregistrée :\n{lines}\n\nElle est en attente de validation par l'opérateur. "
            "Vous recevrez un courriel dès qu'elle sera validée." + SIGNATURE)


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


def otp_reset_text(login: str) -> tuple[str, str]:
    """Subject and text telling the holder that the operator reset their code channel."""
    return ("Votre code de connexion a été réinitialisé",
            f"Bonjour,\n\nÀ votre demande, l'opérateur de votre messagerie sécurisée a "
            f"réinitialisé le moyen de recevoir le code de connexion du compte {login} : le "
            "code vous sera désormais envoyé à cette adresse. Vous pouvez choisir un autre "
            "moyen dans « Mon compte ». Si vous n'êtes pas à l'origine de cette demande, "
            "contactez votre opérateur sans attendre." + SIGNATURE)
