"""Forms of the log-in, account and organisation pages (Flask-WTF: CSRF token included).
Every message is French and shown next to its field."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    Email,
    EqualTo,
    Length,
    Optional,
    Regexp,
    ValidationError,
)

from trust_space.accounts import check_password_strength

REQUIRED = "Ce champ est obligatoire."


def options(*pairs: tuple[str, str]) -> list[SelectChoice]:
    """Choices of a select or radio field, as WTForms ≥ 3.3 wants them."""
    return [SelectChoice(value, label) for value, label in pairs]
PHONE = Regexp(r"^\+?[0-9 .]{10,20}$", message="Numéro de téléphone invalide "
               "(ex. 06 12 34 56 78 ou +33 6 12 34 56 78).")


def required() -> DataRequired:
    return DataRequired(message=REQUIRED)


def email_valid() -> Email:
    return Email(message="Adresse de courriel invalide.", check_deliverability=False)


def strong_password(_form: FlaskForm, field: PasswordField) -> None:
    """The trust space's password rules (8 characters, lower, upper, digit)."""
    problems = check_password_strength(field.data or "")
    if problems:
        raise ValidationError("Le mot de passe doit contenir " + ", ".join(problems) + ".")


class LoginForm(FlaskForm):
    identifier = StringField("Identifiant", validators=[required(), Length(max=254)],
                             description="Adresse de messagerie sécurisée ou identifiant "
                                         "national (RPPS précédé de 8, ADELI précédé de 0)")
    password = PasswordField("Mot de passe", validators=[required(), Length(max=256)])


class CodeForm(FlaskForm):
    code = StringField("Code à 6 chiffres", validators=[
        required(), Regexp(r"^\s*\d{6}\s*$", message="Le code comporte 6 chiffres.")])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token: buttons that change something (logout, validate…)."""


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


ROLE_CHOICES = options(("administrator", "Administrateur"), ("manager", "Gestionnaire"),
                       ("user", "Utilisateur"))


class CollaboratorSearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search changes nothing

    q = StringField("Rechercher dans l'annuaire", validators=[Optional(), Length(max=100)])


class CollaboratorAddForm(FlaskForm):
    address = HiddenField(validators=[required(), Length(max=254)])
    role = SelectField("Rôle", choices=ROLE_CHOICES, default="user")


class CollaboratorRoleForm(FlaskForm):
    role = SelectField("Rôle", choices=ROLE_CHOICES)
