"""Administration commands: ``mss card`` (CPS cards on PKCS#11 tokens) and ``mss audit`` (the
chained audit trail)."""

from __future__ import annotations

import click

from core import audit
from core.errors import MssError
from mss.app import app_of


def register(main: click.Group) -> None:
    main.add_command(card)
    main.add_command(audit_group)



# ---------------------------------------------------------------- cards
@click.group()
def card() -> None:
    """Cartes CPS (jetons PKCS#11 ; SoftHSM2 pour la démonstration et les tests)."""


@card.command("provision")
@click.argument("identifier")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Code PIN de la carte (4 à 8 chiffres).")
@click.option("--label", help="Étiquette du jeton (défaut : CPS-<identifiant national>).")
@click.pass_context
def card_provision(ctx: click.Context, identifier: str, pin: str, label: str | None) -> None:
    """Crée la carte d'un professionnel (IDENTIFIER : RPPS, ADELI, identifiant national ou
    adresse de sa boîte personnelle). La clé est générée sur le jeton et n'en sort jamais."""
    from certs.pki import CardIdentity
    from trust_space.accounts import find_professional

    if not (pin.isdigit() and 4 <= len(pin) <= 8):
        raise MssError("le code PIN doit comporter de 4 à 8 chiffres")
    app = app_of(ctx)
    with app.db.transaction() as session:
        prof, address = find_professional(session, identifier)
        identity = CardIdentity(prof.national_id, prof.first_name, prof.last_name,
                                prof.profession, address)
        info = app.cards.provision(app.pki, session, identity, pin=pin, label=label)
        audit.record(session, actor="mss-cli", action="card.provision",
                     target=prof.national_id, request={"label": info.label}, outcome="ok")
    click.echo(f"Carte {info.label} créée pour {prof.display_name} ({prof.national_id}), "
               f"certificat {info.certificate.serial_number:x}")


@card.command("list")
@click.pass_context
def card_list(ctx: click.Context) -> None:
    """Liste les cartes (jetons) présentes."""
    for label in app_of(ctx).cards.list_cards():
        click.echo(label)


@card.command("read")
@click.argument("label")
@click.option("--pin", prompt=True, hide_input=True)
@click.pass_context
def card_read(ctx: click.Context, label: str, pin: str) -> None:
    """Lit l'identité portée par une carte (avec son code PIN)."""
    info = app_of(ctx).cards.read_identity(label, pin)
    ident = info.identity
    click.echo(f"{info.label} : {ident.first_name} {ident.last_name}, {ident.profession}, "
               f"identifiant national {ident.national_id}")


# ---------------------------------------------------------------- audit trail
@click.group("audit")
def audit_group() -> None:
    """Journal d'audit chaîné (ECO.4.1.2)."""


@audit_group.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Vérifie la chaîne de hachage du journal ; code de sortie 1 si elle est rompue."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        report = audit.verify(session)
    if not report.ok:
        where = f"enregistrement n° {report.first_bad_id}" if report.first_bad_id else "fin"
        raise MssError(f"journal d'audit altéré ({where}) : {report.reason}")
    click.echo(f"Journal d'audit intègre : {report.count} enregistrement(s).")


@audit_group.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--target", help="Seulement les actions sur cette cible (adresse, numéro…).")
@click.pass_context
def audit_list(ctx: click.Context, limit: int, target: str | None) -> None:
    """Affiche les derniers enregistrements (les plus récents d'abord)."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        for rec in audit.recent(session, limit, target):
            click.echo(f"{rec.id:6} {rec.at:%Y-%m-%d %H:%M:%S} {rec.actor:30} {rec.action:20} "
                       f"{rec.target:30} {rec.outcome} {rec.request}")

