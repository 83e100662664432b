"""Sending a one-time code (log-in, confirming a new mobile or usual address, forgotten
password) by e-mail (``core.mailer``) or SMS (``webmail.auth.sms``), with its French words.
The code is never logged; a transport failure becomes ``DeliveryFailed`` for the page."""

from __future__ import annotations

from core.errors import MssError
from core.mailer import SIGNATURE, build_mail
from trust_space.models import OtpChannel
from webmail.auth import otp
from webmail.context import mss
from webmail.errors import DeliveryFailed

CODE_PURPOSES = {
    "login": "Messagerie sécurisée de santé : votre code de connexion est {code} "
             "(valable {minutes} min).",
    "confirm": "Messagerie sécurisée de santé : le code qui confirme ce numéro est {code} "
               "(valable {minutes} min).",
    "reset": "Messagerie sécurisée de santé : votre code de réinitialisation du mot de passe "
             "est {code} (valable {minutes} min).",
}


def _mail_text(purpose: str, code: str, minutes: int) -> tuple[str, str]:
    """Subject and text of the e-mail that carries ``code`` for ``purpose``."""
    if purpose == "login":
        return code_text(code, minutes)
    what = ("confirmer votre nouvelle adresse habituelle" if purpose == "confirm"
            else "choisir un nouveau mot de passe")
    subject = ("Confirmez votre adresse habituelle" if purpose == "confirm"
               else "Réinitialisation de votre mot de passe")
    return subject, (f"Bonjour,\n\nVoici le code pour {what} sur la messagerie sécurisée de "
                     f"santé :\n\n    {code}\n\nIl est valable {minutes} minutes et ne sert "
                     "qu'une fois. Si vous n'êtes pas à l'origine de cette demande, ignorez ce "
                     "message et prévenez votre opérateur." + SIGNATURE)


def deliver_code(channel: str, destination: str, code: str, purpose: str = "login") -> None:
    """Send ``code`` by e-mail or SMS; ``purpose``: login, confirm (a new mobile or usual
    address) or reset (forgotten password).

    Raises:
        DeliveryFailed: the transport refused or is unreachable.
    """
    minutes = otp.CODE_TTL_SECONDS // 60
    try:
        if channel == OtpChannel.SMS.value:
            mss().sms.send(destination, CODE_PURPOSES[purpose].format(code=code,
                                                                      minutes=minutes))
            return
        subject, text = _mail_text(purpose, code, minutes)
        mss().mailer.send(destination, build_mail(to=destination, sender=mss().sender,
                                                  subject=subject, text=text))
    except DeliveryFailed:
        raise
    except (MssError, OSError) as exc:
        raise DeliveryFailed("Le code n'a pas pu être envoyé ; réessayez dans un instant.") \
            from exc


def code_text(code: str, minutes: int) -> tuple[str, str]:
    """Subject and text of the one-time code e-mail."""
    return ("Votre code de connexion",
            f"Bonjour,\n\nVotre code de connexion à la messagerie sécurisée de santé est :\n\n"
            f"    {code}\n\nIl est valable {minutes} minutes et ne sert qu'une fois. Si vous "
            "n'êtes pas à l'origine de cette demande, changez votre mot de passe."
            + SIGNATURE)
