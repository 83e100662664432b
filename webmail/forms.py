"""What the forms of every area share (Flask-WTF: CSRF token included): the field rules (required,
e-mail, phone, password strength), the one-time code form and the CSRF-only form of the
buttons. Each area's own forms are beside its views (``webmail.auth.forms``,
``webmail.account.forms``, ``webmail.orgs.forms``, ``webmail.register.forms``). Every message
is French and shown next to its field."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Regexp, ValidationError

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


class CodeForm(FlaskForm):
    code = StringField("Code à 6 chiffres", validators=[
        required(), Regexp(r"^\s*\d{6}\s*$", message="Le code comporte 6 chiffres.")])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token: buttons that change something (logout, validate…)."""
