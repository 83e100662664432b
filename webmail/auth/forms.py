"""Forms of the log-in and "Mot de passe oublié" pages."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    PasswordField,
    RadioField,
    StringField,
)
from wtforms.validators import EqualTo, Length

from webmail.forms import options, required, strong_password


class LoginForm(FlaskForm):
    identifier = StringField("Identifiant", validators=[required(), Length(max=254)],
                             description="Adresse de messagerie sécurisée ou identifiant "
                                         "national (RPPS précédé de 8, ADELI précédé de 0)")
    password = PasswordField("Mot de passe", validators=[required(), Length(max=256)])


class ResetRequestForm(FlaskForm):
    """Mot de passe oublié, step 1: who, and where the code should go."""

    identifier = StringField("Identifiant", validators=[required(), Length(max=254)],
                             description="Adresse de messagerie sécurisée ou identifiant "
                                         "national (RPPS précédé de 8, ADELI précédé de 0)")
    channel = RadioField("Recevoir le code", choices=options(
        ("email", "Par courriel, à mon adresse habituelle"),
        ("sms", "Par SMS, sur mon téléphone mobile"),
    ), default="email", validators=[required()])


class NewPasswordForm(FlaskForm):
    """Mot de passe oublié, last step."""

    new = PasswordField("Nouveau mot de passe", validators=[required(), strong_password])
    confirm = PasswordField("Confirmation du nouveau mot de passe", validators=[
        required(), EqualTo("new", message="Les deux mots de passe ne sont pas identiques.")])
