"""Forms of *Mon compte*: password, code channel, TOTP enrolment, preferences."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    RadioField,
    StringField,
)
from wtforms.validators import EqualTo, Length, Optional, Regexp, ValidationError

from webmail.forms import PHONE, email_valid, options, required, strong_password


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Mot de passe actuel", validators=[required()])
    new = PasswordField("Nouveau mot de passe", validators=[required(), strong_password])
    confirm = PasswordField("Confirmation du nouveau mot de passe", validators=[
        required(), EqualTo("new", message="Les deux mots de passe ne sont pas identiques.")])


def confirm_password() -> PasswordField:
    """The web password again, before a sensitive change (not asked of a card session)."""
    return PasswordField("Votre mot de passe (confirmation)",
                         validators=[Optional(), Length(max=256)])


class OtpChannelForm(FlaskForm):
    channel = RadioField("Recevoir mon code de connexion", choices=options(
        ("email", "Par courriel, à mon adresse habituelle"),
        ("sms", "Par SMS, sur mon téléphone mobile"),
        ("totp", "Avec une application d'authentification (TOTP)"),
    ), validators=[required()])
    mobile = StringField("Téléphone mobile", validators=[Optional(), PHONE])
    password = confirm_password()


class TotpConfirmForm(FlaskForm):
    code = StringField("Code affiché par l'application", validators=[
        required(), Regexp(r"^\s*\d{6}\s*$", message="Le code comporte 6 chiffres.")])
    password = confirm_password()


class PreferencesForm(FlaskForm):
    notify = BooleanField("M'avertir à mon adresse habituelle quand je reçois un message")
    usual_email = EmailField("Adresse de courriel habituelle",
                             validators=[Optional(), email_valid(), Length(max=254)])
    mobile_published = BooleanField("Publier mon numéro de mobile dans l'annuaire")
    liste_rouge = BooleanField("Liste rouge : ne pas apparaître dans l'annuaire")
    dematerialisation = BooleanField("Dématérialisation : ne plus recevoir de copie papier")
    password = confirm_password()

    def validate_usual_email(self, field: EmailField) -> None:
        if self.notify.data and not field.data:
            raise ValidationError("Indiquez l'adresse où envoyer les avis.")
