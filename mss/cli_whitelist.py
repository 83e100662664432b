"""Following the whitelist from the command line (issue #20): ``mss whitelist fetch`` and
``mss whitelist history``, and how a diff is printed (``import`` shares it)."""

from __future__ import annotations

import click

from core.errors import MssError
from core.localtime import french_datetime
from mss.app import app_of
from trust_space import whitelist_history as history

EXIT_FAILED = 1
DN_FIELD = "DNCertificatOperateur"


def register(group: click.Group) -> None:
    group.add_command(whitelist_fetch)
    group.add_command(whitelist_history)



def _line(change: history.EntryChange) -> str:
    if change.kind == "added":
        return f"+ {change.domain}  {change.dn_after}"
    if change.kind == "removed":
        return f"- {change.domain}  (était {change.dn_before})"
    text = f"~ {change.domain} ({', '.join(change.fields)})"
    if change.dn_changed:
        text += f"\n    DN avant : {change.dn_before}\n    DN après : {change.dn_after}"
    return text


def print_changes(applied: history.Applied, dry_run: bool) -> None:
    """The diff line by line, our own ignored domains, the warnings, then a summary."""
    diff = applied.diff
    for change in applied.changes:
        click.echo(_line(change))
    for domain in diff.ignored:
        click.echo(f"  {domain} (notre propre domaine, ignoré)")
    for change in applied.changes:
        if change.dn_changed:
            click.echo(f"ATTENTION : le DN du certificat de l'opérateur de {change.domain} a "
                       "changé (vérifiez-le avec l'opérateur avant d'échanger).")
        elif change.kind == "removed":
            click.echo(f"ATTENTION : {change.domain} a quitté la liste blanche (plus aucun "
                       "échange avec ce domaine).")
    verb = "changerait" if dry_run else "a changé"
    if diff.is_empty:
        click.echo("Aucun changement.")
    else:
        click.echo(f"La liste blanche {verb} : {len(diff.added)} ajout(s), "
                   f"{len(diff.removed)} retrait(s), {len(diff.changed)} modification(s).")


@click.command("fetch")
@click.option("--dry-run", is_flag=True,
              help="Récupère et affiche les changements sans les appliquer ni les garder.")
@click.pass_context
def whitelist_fetch(ctx: click.Context, dry_run: bool) -> None:
    """Récupère maintenant la liste blanche publiée (MSS_WHITELIST_URL) et l'applique ;
    en cas d'échec (réseau, certificat, fichier illisible) la liste actuelle est gardée."""
    from mss.whitelist_fetch import follow_now

    app = app_of(ctx)
    if not app.settings.whitelist_url:
        raise MssError("MSS_WHITELIST_URL est vide : la liste blanche n'est pas suivie "
                       "(« mss whitelist import FICHIER » pour la charger à la main)")
    click.echo(f"Récupération de {app.settings.whitelist_url} …", err=True)
    report = follow_now(app.db, app.settings, requested_by="cli", actor="cli", dry_run=dry_run)
    if report.outcome in (history.FetchOutcome.FAILED, history.FetchOutcome.REFUSED):
        for error in report.errors[:50]:
            click.echo(f"  {error}", err=True)
        kept = "" if dry_run else " ; la liste actuelle est gardée"
        raise MssError(f"récupération en échec{kept} : {report.detail}")
    if report.outcome is history.FetchOutcome.NOT_MODIFIED:
        click.echo("Liste inchangée depuis la dernière récupération (304 Not Modified).")
        return
    assert report.applied is not None
    print_changes(report.applied, dry_run)


@click.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Nombre de changements affichés (les plus récents).")
@click.option("--lines", default=50, show_default=True, type=click.IntRange(0, 100000),
              help="Lignes de différence affichées par changement.")
@click.pass_context
def whitelist_history(ctx: click.Context, limit: int, lines: int) -> None:
    """Historique des changements de la liste blanche (qui, quand, source, différences), les
    avertissements en attente et la dernière récupération ; heures de Paris."""
    app = app_of(ctx)
    with app.db.read() as session:
        found = history.changes(session, limit)
        warnings = history.open_warnings(session)
        state = history.status(session)
        for change in found:
            click.echo(f"n° {change.id} — {french_datetime(change.at)} — {change.actor} — "
                       f"source : {change.source}")
            click.echo(f"  {change.added} ajout(s), {change.removed} retrait(s), "
                       f"{change.changed} modification(s)")
            shown = history.lines_of(change)
            for entry in shown[:lines]:
                click.echo("  " + _line(entry).replace("\n", "\n  "))
            if len(shown) > lines:
                click.echo(f"  … et {len(shown) - lines} autre(s) ligne(s) (--lines)")
        if not found:
            click.echo("Aucun changement enregistré.")
        for w in warnings:
            what = (f"DN changé : {w.dn_before} → {w.dn_after}" if w.kind == "dn_changed"
                    else f"domaine retiré (DN {w.dn_before})")
            click.echo(f"ATTENTION n° {w.id} ({french_datetime(w.created_at)}) : {w.domain} — "
                       f"{what} ; à prendre en compte sur la page Liste blanche")
        if state.last is not None:
            click.echo(f"Dernière récupération : {french_datetime(state.last.at)} — "
                       f"{history.OUTCOME_FR[state.last.outcome]} — {state.last.detail}")

