"""Operations commands: ``mss selftest`` (conformance checks before going live)."""

from __future__ import annotations

import json
import sys

import click

from mss.app import app_of
from mss.selftest import FAIL, OK, SKIP, WARN, Check

_MARKS = {OK: ("OK  ", "green"), WARN: ("ATTN", "yellow"), FAIL: ("ÉCHEC", "red"),
          SKIP: ("--  ", None)}


def register(main: click.Group) -> None:
    main.add_command(selftest_cmd)


def _peer(_ctx: click.Context, _param: click.Parameter,
          values: tuple[str, ...]) -> list[tuple[str, int]]:
    peers = []
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"« {value} » : attendu HÔTE:PORT")
        peers.append((host, int(port)))
    return peers


@click.command("selftest")
@click.option("--peer", "peers", multiple=True, callback=_peer, metavar="HÔTE:PORT",
              help="Relais d'un opérateur pair dont le DN est comparé à la liste blanche "
                   "(répétable).")
@click.option("--json", "as_json", is_flag=True, help="Résultat en JSON sur la sortie standard.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(1, 120),
              help="Délai de chaque connexion (secondes).")
@click.pass_context
def selftest_cmd(ctx: click.Context, peers: list[tuple[str, int]], as_json: bool,
                 timeout: float) -> None:
    """Vérifie la conformité des services en marche (TLS ECO.1.1.x, certificats, liste
    blanche, refus au RCPT, champs X-MSS-*, MDN, journal d'audit). Code de sortie 1 si un
    contrôle échoue."""
    from mss.selftest import run_selftest

    app = app_of(ctx)
    report = run_selftest(app, peers, progress=None if as_json else _print_check,
                          timeout=timeout)
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        failed = sum(c.status == FAIL for c in report.checks)
        warned = sum(c.status == WARN for c in report.checks)
        verdict = "conforme" if report.ok else f"NON conforme ({failed} échec(s))"
        click.echo(f"Auto-test : {verdict}, {warned} avertissement(s).")
    sys.exit(0 if report.ok else 1)


def _print_check(check: Check) -> None:
    mark, colour = _MARKS[check.status]
    click.echo(click.style(f"[{mark}]", fg=colour) + f" {check.name:28} {check.detail}")
