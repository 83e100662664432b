"""Forms of the organisational mailboxes' pages: search, add and change a collaborator."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    HiddenField,
    SelectField,
    StringField,
)
from wtforms.validators import Length, Optional

from webmail.forms import options, required

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
