"""``mss init``, ``mss demo`` and ``mss run``: a data directory prepared, the demo trust space
set up, the services run; with what they offer printed (addresses, ports, where the logins are:
never a secret). ``mss demo --pair``: two demo operators that know each other, set up and run
together (``mss.pair``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.settings import Settings
from mss.app import App, app_of

if TYPE_CHECKING:
    from mss.pair import Running
    from mss.run import Service

FIRST_PERSON, PEER_PERSON = "marie.martin", "paul.durand"


def register(main: click.Group) -> None:
    main.add_command(init_cmd)
    main.add_command(demo_cmd)
    main.add_command(run_cmd)


@click.command("init")
@click.option("--domain", help="Domaine de messagerie de l'opérateur (ex. mss.test).")
@click.pass_context
def init_cmd(ctx: click.Context, domain: str | None) -> None:
    """Prépare le répertoire de données : schéma, secret, autorité de certification."""
    from mss.setup import init

    report = init(app_of(ctx, domain=domain))
    click.echo(f"Répertoire de données : {report.data_dir}")
    click.echo(f"Base de données       : {_safe_url(report.database_url)}")
    click.echo(f"Autorité (chaîne)     : {report.data_dir / 'pki' / 'ca.pem'}"
               + (" (créée)" if report.created_pki else ""))
    click.echo(f"Certificat serveur    : {report.server_cert}")


@click.command("demo")
@click.option("--domain", help="Domaine de l'opérateur de démonstration (défaut : mss.test).")
@click.option("--pair", is_flag=True, help="Deux opérateurs qui se connaissent (le second, "
              "autre.test, à côté du répertoire de données), lancés jusqu'à Ctrl-C.")
@click.pass_context
def demo_cmd(ctx: click.Context, domain: str | None, pair: bool) -> None:
    """Crée l'espace de confiance de démonstration (idempotent)."""
    from mss.demo import DEMO_PIN, demo_password_file, operator_totp_file, setup_demo

    if pair:
        return demo_pair(ctx.find_root().params.get("data_dir"), domain)
    app = app_of(ctx, domain=domain)
    report = setup_demo(app)
    click.echo(f"Espace de démonstration prêt pour {report.domain}.")
    # Secrets are not printed (this output ends up in service logs): where to read them.
    note = (" (généré ; fixez MSS_DEMO_PASSWORD pour le choisir)"
            if report.password_generated else " (celui de MSS_DEMO_PASSWORD)")
    click.echo(f"Mot de passe de tous les comptes : dans {demo_password_file(app)}{note}")
    for login, desc in report.accounts:
        click.echo(f"  {login:40} {desc}")
    click.echo(f"Cartes CPS (SoftHSM2, PIN {DEMO_PIN}) : {', '.join(report.cards)}")
    if report.operator_totp:
        click.echo(f"Clé TOTP de l'opérateur (application d'authentification) : dans "
                   f"{operator_totp_file(app)}")
    click.echo(f"Certificats de démonstration (PEM) : {report.files[0].parent}/")
    if report.app_password_file is not None:
        click.echo(f"Mot de passe d'application IMAP/SMTP (client de messagerie) : "
                   f"{report.app_password_file}")
    from mss.psc_standin import DEFAULT_PORT, enable_in_toml

    if enable_in_toml(app.settings, app.settings.oidc_standin_port or DEFAULT_PORT):
        click.echo("Pro Santé Connect : remplaçant local de démonstration configuré "
                   "(mss.toml, réglages oidc_*), lancé par `mss run`.")


@click.command("run")
@click.option("--role", type=click.Choice(["all", "mailstore", "gateway", "webmail"]),
              default="all", show_default=True, help="Quels services lancer (un par conteneur).")
@click.pass_context
def run_cmd(ctx: click.Context, role: str) -> None:
    """Lance les services (Dovecot…) jusqu'à SIGTERM / Ctrl-C."""
    from core.logs import configure
    from mss.run import run
    from mss.setup import init

    app = app_of(ctx)
    configure(app.settings.log_level)
    init(app)

    def ready(services: list[Service]) -> None:
        click.echo(f"mss {role} prêt — domaine {app.settings.domain}, "
                   f"données {app.settings.data_dir}")
        for service in services:
            for line in service.endpoints():
                click.echo(f"  {line}")
        _print_logins(app)
        click.echo("Ctrl-C pour arrêter.")

    run(app, role, ready=ready)


def _print_logins(app: App) -> None:
    from mss.demo import DEMO_PIN, demo_logins, demo_password_file, operator_totp_file

    logins = demo_logins(app)
    if not logins:
        return
    # Never the secrets themselves (this banner ends up in service logs): their 0600 files.
    click.echo(f"Comptes de démonstration (mot de passe dans {demo_password_file(app)}, "
               f"PIN des cartes : {DEMO_PIN}) :")
    for login, _pw in logins:
        click.echo(f"  {login}")
    s = app.settings
    click.echo(f"Certificats de carte pour le navigateur : {s.demo_dir}/<adresse>.crt|.key")
    for path in sorted(s.demo_dir.glob("*.app-password")):
        click.echo(f"Mot de passe d'application IMAP/SMTP de {path.name[:-13]} : {path}")
    totp = operator_totp_file(app)
    if totp.exists():
        click.echo(f"Clé TOTP de l'opérateur : dans {totp}")
    if s.oidc_standin_port:
        from mss.psc_standin import NEWCOMER

        click.echo("Pro Santé Connect (remplaçant local) : identifiant national 8 + RPPS ou "
                   "0 + ADELI (Marie Martin : 810000000001), code e-CPS = mot de passe de "
                   f"démonstration ; {NEWCOMER['national_id']} : une professionnelle sans "
                   "compte (inscription)")
    if not s.smarthost:
        click.echo(f"Codes à usage unique et avis de nouveau message (pas de MSS_SMARTHOST) : "
                   f"e-mails dans {s.data_dir / 'spool' / 'mail'}, "
                   f"SMS dans {s.sms_spool_dir or s.data_dir / 'spool' / 'sms'}")


def _safe_url(url: str) -> str:
    """The database URL without its password (never print secrets)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def demo_pair(data_dir: Path | None, domain: str | None) -> None:
    """Prepare (idempotent) and run both operators until Ctrl-C / SIGTERM."""
    from core.logs import configure
    from mss.pair import demo_sides, prepare, serve

    a, b = demo_sides(data_dir, domain)
    first, second = prepare(a, b)
    configure(first.settings.log_level)
    serve([first, second], ready=print_summary)


def print_summary(running: list[Running]) -> None:
    """Each operator's addresses, ports and logins (never a secret: the files holding them),
    then how to try the pair."""
    click.echo("Deux opérateurs de démonstration qui se connaissent (liste blanche, "
               "autorités de certification, routes et annuaires échangés) :")
    for r in running:
        s = r.settings
        click.echo("")
        click.secho(f"== {s.domain} — {s.operator_name}", bold=True)
        click.echo(f"Webmail : {_webmail(s)}")
        click.echo(f"Données : {s.data_dir}")
        for service in r.services:
            for line in service.endpoints():
                click.echo(f"  {line}")
        _print_logins(r.app)
    first, second = (r.settings for r in running)
    click.echo("")
    click.echo(f"Essai : {FIRST_PERSON}@{first.domain} se connecte sur {_webmail(first)} et "
               f"écrit à {PEER_PERSON}@{second.domain} en cochant « Chiffrer » ; "
               f"{PEER_PERSON}@{second.domain} le lit sur {_webmail(second)} et répond.")
    click.echo("Ctrl-C pour arrêter les deux opérateurs.")


def _webmail(s: Settings) -> str:
    return s.webmail_url or f"https://{s.hostname}:{s.web_port}/"
