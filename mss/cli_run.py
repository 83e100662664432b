"""``mss demo --pair``: two demo operators that know each other, set up and run together
(``mss.pair``), with what each offers printed (addresses, ports, where the logins are)."""

from __future__ import annotations

from pathlib import Path

import click

from core.settings import Settings
from mss.pair import Running, demo_sides, prepare, serve

FIRST_PERSON, PEER_PERSON = "marie.martin", "paul.durand"


def demo_pair(data_dir: Path | None, domain: str | None) -> None:
    """Prepare (idempotent) and run both operators until Ctrl-C / SIGTERM."""
    from core.logs import configure

    a, b = demo_sides(data_dir, domain)
    first, second = prepare(a, b)
    configure(first.settings.log_level)
    serve([first, second], ready=print_summary)


def print_summary(running: list[Running]) -> None:
    """Each operator's addresses, ports and logins (never a secret: the files holding them),
    then how to try the pair."""
    from mss.cli import _print_logins

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
