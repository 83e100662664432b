"""Forms of the registration wizard (steps 2 to 4), with the platforms' fields and rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, RadioField, SelectField, StringField
from wtforms.validators import EqualTo, Length, Optional, Regexp, ValidationError

from webmail.forms import PHONE, email_valid, options, required, strong_password

CIVILITIES = options(("", "Choisir…"), ("M.", "M."), ("Mme", "Mme"), ("Dr", "Dr"), ("Pr", "Pr"))
PROFESSIONS = ["Médecin", "Pharmacien", "Infirmier", "Chirurgien-dentiste", "Sage-femme",
               "Masseur-kinésithérapeute", "Pédicure-podologue", "Orthophoniste", "Orthoptiste",
               "Biologiste", "Psychologue", "Autre professionnel de santé"]
MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
          "octobre", "novembre", "décembre"]
POSTAL_CODE = Regexp(r"^\d{5}$", message="Le code postal comporte 5 chiffres.")
CARD_FIELDS = ("first_name", "last_name", "profession", "id_kind", "id_number")


class IdentityForm(FlaskForm):
    """Step 2: personal data. Fields read from a CPS card are locked (``lock_card_fields``)."""

    civility = SelectField("Civilité", choices=CIVILITIES, validators=[required()])
    last_name = StringField("Nom", validators=[required(), Length(max=100)])
    first_name = StringField("Prénom", validators=[required(), Length(max=100)])
    email = EmailField("Adresse de courriel habituelle", validators=[
        required(), email_valid(), Length(max=254)],
        description="Votre adresse personnelle (non sécurisée) : avis et codes de connexion.")
    email_confirm = EmailField("Confirmation de l'adresse de courriel", validators=[
        required(), EqualTo("email", message="Les deux adresses ne sont pas identiques.")])
    place_of_practice = StringField("Lieu d'exercice", validators=[required(), Length(max=200)],
                                    description="Cabinet, officine, établissement…")
    birth_day = SelectField("Jour de naissance", validators=[required()], choices=options(
        ("", "Jour"), *((str(d), str(d)) for d in range(1, 32))))
    birth_month = SelectField("Mois de naissance", validators=[required()], choices=options(
        ("", "Mois"), *((str(i), m) for i, m in enumerate(MONTHS, 1))))
    profession = SelectField("Profession", validators=[required()],
                             choices=options(("", "Choisir…"), *((p, p) for p in PROFESSIONS)))
    id_kind = RadioField("Identifiant professionnel", default="rpps", validators=[required()],
                         choices=options(("rpps", "RPPS (11 chiffres)"),
                                         ("adeli", "ADELI (9 chiffres)")))
    id_number = StringField("Numéro RPPS ou ADELI", validators=[required()],
                            render_kw={"inputmode": "numeric"})
    specialty = StringField("Spécialité", validators=[Optional(), Length(max=100)])
    address = StringField("Adresse professionnelle", validators=[required(), Length(max=300)])
    postal_code = StringField("Code postal", validators=[required(), POSTAL_CODE],
                              render_kw={"inputmode": "numeric"})
    city = StringField("Ville", validators=[required(), Length(max=120)])
    phone = StringField("Téléphone fixe", validators=[Optional(), PHONE])
    mobile = StringField("Téléphone mobile", validators=[Optional(), PHONE])

    def validate_id_number(self, field: StringField) -> None:
        digits = 11 if self.id_kind.data == "rpps" else 9
        value = (field.data or "").strip()
        if not (len(value) == digits and value.isascii() and value.isdigit()):
            label = "RPPS" if self.id_kind.data == "rpps" else "ADELI"
            raise ValidationError(f"Le numéro {label} comporte {digits} chiffres.")

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        if not (self.phone.data or "").strip() and not (self.mobile.data or "").strip():
            self.phone.errors = [*self.phone.errors,
                                 "Indiquez au moins un numéro : téléphone fixe ou mobile."]
            ok = False
        return self._refuse_forged() and ok

    def lock_card_fields(self, card: dict[str, str] | None, source: str = "card") -> None:
        """Make the fields read from the card (or given by Pro Santé Connect: ``source``
        "psc") read-only and keep their values; a posted value that differs is remembered and
        refused by ``validate`` (issue #15 item 10). A field the source left empty (a
        profession PSC names with a code outside the list) stays editable."""
        self.forged: list[str] = []
        self.locked: list[str] = []
        self.source = source
        if not card:
            return
        if card["profession"] and card["profession"] not in PROFESSIONS:  # always accepted
            self.profession.choices = [*self.profession.choices,
                                       (card["profession"], card["profession"])]
        for name in CARD_FIELDS:
            if not card[name]:
                continue
            self.locked.append(name)
            field = getattr(self, name)
            posted = field.raw_data[0] if field.raw_data else None
            if posted is not None and str(posted).strip() != card[name]:
                self.forged.append(name)
            field.data = card[name]
            field.render_kw = {**(field.render_kw or {}), "readonly": True}

    def _refuse_forged(self) -> bool:
        for name in getattr(self, "forged", []):
            field = getattr(self, name)
            origin = ("est transmise par Pro Santé Connect" if self.source == "psc"
                      else "est lue sur votre carte CPS")
            field.errors = [*field.errors,
                            f"Cette information {origin} : elle ne peut pas être modifiée."]
        return not getattr(self, "forged", [])

    def values(self) -> dict[str, str]:
        return {name: (f.data or "").strip() for name, f in self._fields.items()
                if name not in ("csrf_token", "email_confirm")}


class CredentialsForm(FlaskForm):
    """Step 3: the password of the proposed identifier."""

    password = PasswordField("Mot de passe", validators=[required(), strong_password])
    confirm = PasswordField("Confirmation du mot de passe", validators=[
        required(), EqualTo("password", message="Les deux mots de passe ne sont pas identiques.")])


class AddressForm(FlaskForm):
    """Step 4: addresses (the pharmacy's optional organisational address) and the CGU."""

    pharmacy = BooleanField("Demander aussi l'adresse organisationnelle de mon officine")
    pharmacy_name = StringField("Nom de l'officine", validators=[Length(max=100)],
                                description="Son nom distinctif, sans « Pharmacie » : "
                                            "« du Centre », « des Arceaux »…")
    finess = StringField("Numéro FINESS de l'officine", render_kw={"inputmode": "numeric"})
    pharmacy_postal_code = StringField("Code postal de l'officine",
                                       render_kw={"inputmode": "numeric"})
    pharmacy_city = StringField("Ville de l'officine", validators=[Length(max=120)])
    cgu = BooleanField("J'ai lu et j'accepte les conditions générales d'utilisation")

    def validate(self, extra_validators: Any = None) -> bool:
        ok = super().validate(extra_validators)
        if not self.cgu.data:
            self.cgu.errors = ["Vous devez accepter les conditions générales d'utilisation."]
            ok = False
        if self.pharmacy.data:
            ok = _pharmacy_checks(self) and ok
        return ok


def _pharmacy_checks(form: AddressForm) -> bool:
    checks: Sequence[tuple[StringField, str, str]] = (
        (form.pharmacy_name, r"\S", "Indiquez le nom de l'officine."),
        (form.finess, r"^\d{9}$", "Le numéro FINESS comporte 9 chiffres."),
        (form.pharmacy_postal_code, r"^\d{5}$", "Le code postal comporte 5 chiffres."),
        (form.pharmacy_city, r"\S", "Indiquez la ville de l'officine."),
    )
    ok = True
    for field, pattern, message in checks:
        if not re.search(pattern, (field.data or "").strip()):
            field.errors = [*field.errors, message]
            ok = False
    return ok
