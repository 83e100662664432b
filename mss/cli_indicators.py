"""`mss indicators`: the month's usage indicators as CSV files (``mss.indicators``), or their
totals in French with ``--dry-run``. The monthly duty of an operator (README, "Exploitation")."""

from __future__ import annotations

from pathlib import Path

import click

from core import audit
from core.db import utcnow
from mss.app import app_of
from mss.indicators import IndicatorError, Month, compute, summary, write_files


def register(main: click.Group) -> None:
    main.add_command(indicators_cmd)


@click.command("indicators")
@click.option("--month", "month_text", metavar="AAAA-MM",
              help="Mois calendaire, heure de Paris (défaut : le mois précédent).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Répertoire des fichiers CSV.")
@click.option("--operator-id", help="Identifiant de l'opérateur écrit dans chaque ligne et "
                                    "dans le nom des fichiers (défaut : le domaine).")
@click.option("--dry-run", is_flag=True, help="Affiche les totaux sans écrire de fichier.")
@click.pass_context
def indicators_cmd(ctx: click.Context, month_text: str | None, out_dir: Path,
                   operator_id: str | None, dry_run: bool) -> None:
    """Indicateurs d'usage mensuels : BAL par type, messages envoyés et reçus, connexions
    par canal et par mode d'authentification (un fichier CSV par famille)."""
    now = utcnow()
    current = Month.of(now)
    month = Month.parse(month_text) if month_text is not None else current.previous()
    if month > current:
        raise IndicatorError(f"le mois {month.label} n'a pas commencé", code="future_month")
    app = app_of(ctx)
    with app.db.read() as session:
        found = compute(session, month, operator_id or app.settings.domain)
    for line in summary(found):
        click.echo(line)
    if month == current:
        click.echo("Attention : mois en cours, chiffres partiels.")
    if dry_run:
        click.echo("Aucun fichier écrit (--dry-run).")
        return
    written = write_files(found, out_dir)
    with app.db.transaction() as session:
        audit.record(session, actor="mss-cli", action="indicators.export", target=month.label,
                     outcome="ok", request={"operator_id": found.operator_id,
                                            "files": [p.name for p in written]})
    for path in written:
        click.echo(f"Écrit : {path}")
