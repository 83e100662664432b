"""E-mails the webmail sends to a professional's usual (non-secure) address: one-time codes and
registration news. They leave the trust space: no patient data, ever.

They are built and sent by ``core.mailer``.
"""

from __future__ import annotations

from core.mailer import SIGNATURE


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
