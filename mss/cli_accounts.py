"""`mss account`: registrations awaiting validation, operator accounts, unlocking,
application passwords."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.errors import NotFound
from mss.app import app_of

if TYPE_CHECKING:
    from trust_space.models import Account


def register(main: click.Group) -> None:
    main.add_command(account)



@click.group()
def account() -> None:
    """Comptes : inscriptions à valider, comptes opérateur, déblocage."""


@account.command("list")
@click.option("--pending", is_flag=True, help="Seulement les inscriptions à valider.")
@click.pass_context
def account_list(ctx: click.Context, pending: bool) -> None:
    """Liste les comptes, ou les inscriptions en attente de validation."""
    from trust_space import registration
    from trust_space.models import Account

    app = app_of(ctx)
    with app.db.transaction() as session:
        if pending:
            for reg in registration.pending(session):
                pro = reg.professional
                click.echo(f"{reg.addresses[0]:40} {pro.display_name:30} {pro.profession:20} "
                           f"{pro.national_id} {' '.join(reg.addresses[1:])}")
            return
        for row in session.scalars(select(Account).order_by(Account.id)):
            flags = [row.state.value] + (["opérateur"] if row.is_operator else []) + (
                ["bloqué"] if row.locked_until else [])
            click.echo(f"{row.login:40} {row.kind.value:13} {', '.join(flags)}")


def _decide(ctx: click.Context, address: str, accept: bool, store: str = "") -> list[str]:
    from core.mailer import outbound_mailer
    from webmail.operator.decision import decide

    app = app_of(ctx)
    s = app.settings
    url = s.webmail_url or f"https://{s.hostname}:{s.web_port}/"
    return decide(app.db, s, outbound_mailer(s), address, accept=accept, actor="mss-cli",
                  webmail_url=url, store=store)


@account.command("validate")
@click.argument("address")
@click.option("--store", default="", metavar="NOM",
              help="Magasin de courrier (MSS_MAIL_STORES) où placer ses boîtes ; "
                   "défaut : le premier.")
@click.pass_context
def account_validate(ctx: click.Context, address: str, store: str) -> None:
    """Valide l'inscription d'ADDRESS : publie ses boîtes et prévient le professionnel."""
    addresses = _decide(ctx, address, True, store)
    click.echo(f"Inscription validée, publiée dans l'annuaire : {', '.join(addresses)}")


@account.command("refuse")
@click.argument("address")
@click.pass_context
def account_refuse(ctx: click.Context, address: str) -> None:
    """Refuse l'inscription d'ADDRESS : ferme ses boîtes et prévient le professionnel."""
    addresses = _decide(ctx, address, False)
    click.echo(f"Inscription refusée : {', '.join(addresses)}")


@account.command("operator")
@click.argument("login")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Mot de passe (8 caractères dont minuscule, majuscule et chiffre).")
@click.pass_context
def account_operator(ctx: click.Context, login: str, password: str) -> None:
    """Crée (ou met à jour) le compte opérateur LOGIN. Son code de connexion vient d'une
    application d'authentification : la clé à y saisir est affichée une fois."""
    from trust_space.operator_accounts import ensure_operator
    from webmail.auth import otp

    app = app_of(ctx)
    seed = otp.new_totp_seed()
    with app.db.transaction() as session:
        found = ensure_operator(session, login, otp.seal_seed(seed, app.settings.secret()),
                                password=password)
        audit.record(session, actor="mss-cli", action="account.operator", target=found.login,
                     outcome="ok")
    click.echo(f"Compte opérateur {login} prêt. Clé de l'application d'authentification "
               f"(TOTP) :\n  {seed}\n  {otp.provisioning_uri(seed, login)}")


@account.command("unlock")
@click.argument("login")
@click.pass_context
def account_unlock(ctx: click.Context, login: str) -> None:
    """Débloque un compte bloqué après des échecs de connexion."""
    from trust_space.accounts import find_account

    app = app_of(ctx)
    with app.db.transaction() as session:
        found = find_account(session, login)
        if found is None:
            raise NotFound(f"compte inconnu : « {login} »")
        found.failed_attempts = 0
        found.code_failures = 0
        found.locked_until = None
        audit.record(session, actor="mss-cli", action="account.unlock", target=found.login,
                     outcome="ok")
    click.echo(f"Compte {found.login} débloqué.")


@account.group("app-password")
def app_password() -> None:
    """Mots de passe d'application (IMAP/SMTP) : créer, lister, révoquer."""


def _account_of(session: Session, login: str) -> Account:
    from trust_space.accounts import find_account

    found = find_account(session, login)
    if found is None:
        raise NotFound(f"compte inconnu : « {login} »")
    return found


@app_password.command("create")
@click.argument("login")
@click.option("--name", required=True, help="L'appareil ou le logiciel, ex. « Thunderbird ».")
@click.pass_context
def app_password_create(ctx: click.Context, login: str, name: str) -> None:
    """Crée un mot de passe d'application pour LOGIN et l'affiche une seule fois."""
    from trust_space import app_passwords

    app = app_of(ctx)
    with app.db.transaction() as session:
        found = _account_of(session, login)
        row, password = app_passwords.create(session, found, name)
        audit.record(session, actor="mss-cli", action="account.app_password.create",
                     target=found.login, outcome="ok",
                     request={"name": row.name, "prefix": row.prefix})
    click.echo(f"Mot de passe d'application « {row.name} » pour {found.login} "
               f"(préfixe {row.prefix}) :")
    click.echo(password)
    click.echo("Il ne sera plus affiché : copiez-le dans le logiciel (IMAP et SMTP).", err=True)


@app_password.command("list")
@click.argument("login")
@click.pass_context
def app_password_list(ctx: click.Context, login: str) -> None:
    """Liste les mots de passe d'application actifs de LOGIN (jamais leur secret)."""
    from trust_space import app_passwords

    app = app_of(ctx)
    with app.db.transaction() as session:
        rows = app_passwords.active(session, _account_of(session, login))
        for row in rows:
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "jamais"
            click.echo(f"{row.prefix}  {row.created_at:%Y-%m-%d %H:%M}  "
                       f"utilisé : {used:16}  {row.name}")
        if not rows:
            click.echo("Aucun mot de passe d'application actif.")


@app_password.command("revoke")
@click.argument("login")
@click.argument("prefix_or_name")
@click.pass_context
def app_password_revoke(ctx: click.Context, login: str, prefix_or_name: str) -> None:
    """Révoque le mot de passe d'application PREFIX_OR_NAME (préfixe ou nom) de LOGIN."""
    from trust_space import app_passwords

    app = app_of(ctx)
    with app.db.transaction() as session:
        found = _account_of(session, login)
        row = app_passwords.revoke(session, found, prefix_or_name)
        audit.record(session, actor="mss-cli", action="account.app_password.revoke",
                     target=found.login, outcome="ok",
                     request={"name": row.name, "prefix": row.prefix})
    click.echo(f"Mot de passe d'application « {row.name} » ({row.prefix}) révoqué.")
