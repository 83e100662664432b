"""Connexion: the pages (``views``: CPS card, password then one-time code, déconnexion;
``psc``: Pro Santé Connect; ``reset``: mot de passe oublié) and the rules they call
(``rules``: which account a card or PSC names, who may use the webmail, lock-out counting;
``otp``: one-time codes and TOTP; ``codes``: sending a code by e-mail or SMS, ``sms`` the SMS
transport; ``landing``: where a person arrives).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the log-in pages (with "Mot de passe oublié ?") and Pro Santé Connect's."""
    from webmail.auth import psc, views

    views.init_app(app)
    psc.init_app(app)
