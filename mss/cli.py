"""The `mss` command. Each sub-command parses its input, calls one function of a package below
and prints the result; errors become a clear message and a non-zero exit code in one place
(``MssGroup.invoke``), never a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from core.errors import MssError
from mss.app import App, app_of

EXIT_ERROR = 1
EXIT_USAGE = 2


class MssGroup(click.Group):
    """Maps every MssError (and a dead database) to one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MssError as exc:
            click.secho(f"Erreur : {exc.message}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except OperationalError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig else "connexion impossible"
            click.secho(f"Erreur : base de données inaccessible ({reason})", fg="red", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=MssGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MSS_DATA_DIR", help="Répertoire de données (défaut : ./mss-data).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """mss — opérateur de messagerie sécurisée de santé."""
    # Files mss creates (database, keys, settings) are private unless made otherwise on purpose.
    os.umask(0o077)


@main.command("init")
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


@main.command("demo")
@click.option("--domain", help="Domaine de l'opérateur de démonstration (défaut : mss.test).")
@click.option("--pair", is_flag=True, help="Deux opérateurs qui se connaissent (le second, "
              "autre.test, à côté du répertoire de données), lancés jusqu'à Ctrl-C.")
@click.pass_context
def demo_cmd(ctx: click.Context, domain: str | None, pair: bool) -> None:
    """Crée l'espace de confiance de démonstration (idempotent)."""
    from mss.demo import DEMO_PIN, demo_password_file, operator_totp_file, setup_demo

    if pair:
        from mss.cli_run import demo_pair

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


@main.command("run")
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

    def ready(services: list) -> None:  # type: ignore[type-arg]
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


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


# Sub-groups live in their own modules to keep this one short.
from mss import cli_admin, cli_annuaire, cli_dns, cli_indicators, cli_peers  # noqa: E402

cli_admin.register(main)
cli_peers.register(main)  # after cli_admin: it adds to the peers group
cli_annuaire.register(main)
cli_dns.register(main)
cli_indicators.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
