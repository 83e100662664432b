"""``mss whitelist``: the trusted operators' list — import (MSSanté XML) and export, list,
where to reach a peer's relay (``route``), following the published list (issue #20: ``fetch``,
``history``) and how a diff is printed (``import`` and ``fetch`` share it)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography import x509
from sqlalchemy import select

from core import audit
from core.errors import MssError, NotFound
from core.localtime import french_datetime
from mss.app import app_of
from mss.cli_io import read_input, report_import_errors, write_output
from trust_space import whitelist_history as history
from trust_space.errors import ImportFailed

EXIT_FAILED = 1
DN_FIELD = "DNCertificatOperateur"


def register(main: click.Group) -> None:
    main.add_command(whitelist)


@click.group()
def whitelist() -> None:
    """Liste blanche des opérateurs de l'espace de confiance."""


@whitelist.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Affiche les changements sans les appliquer.")
@click.option("--merge", is_flag=True,
              help="Ajoute et met à jour sans retirer les domaines absents du fichier.")
@click.pass_context
def whitelist_import(ctx: click.Context, path: Path, dry_run: bool, merge: bool) -> None:
    """Importe la liste blanche MSSanté (XML) et affiche ce qui change (gardé dans
    l'historique : « mss whitelist history »)."""
    from trust_space.whitelist_history import apply_whitelist

    data = read_input(path)
    app = app_of(ctx)
    try:
        with app.db.transaction() as session:
            applied = apply_whitelist(session, data, actor="cli", source=path.name,
                                      replace=not merge, local_domains=app.local_domains,
                                      dry_run=dry_run)
            diff = applied.diff
            if not dry_run:
                audit.record(session, actor="mss-cli", action="whitelist.import",
                             target=path.name, outcome="ok",
                             request={"added": len(diff.added), "removed": len(diff.removed),
                                      "changed": len(diff.changed),
                                      "change": applied.change_id})
    except ImportFailed as exc:
        report_import_errors(exc)
        raise MssError(f"liste blanche refusée, rien n'a changé : {len(exc.errors)} erreur(s)"
                       ) from exc
    print_changes(applied, dry_run)


@whitelist.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--with-peers", is_flag=True, help="Inclut aussi les domaines des pairs connus.")
@click.pass_context
def whitelist_export(ctx: click.Context, output: Path | None, with_peers: bool) -> None:
    """Exporte l'entrée de cet opérateur (domaine + DN du certificat de relais), à importer
    chez un opérateur pair."""
    from trust_space.whitelist import export_whitelist, local_entry

    app = app_of(ctx)
    cert_path = app.settings.pki_dir / "operator.crt"
    if not cert_path.exists():
        raise MssError("certificat d'opérateur absent : lancez d'abord « mss init »")
    dn = x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string()
    own = local_entry(app.settings.domain, dn, description=app.settings.operator_name)
    with app.db.transaction() as session:
        data = export_whitelist(session, own=[own], include_peers=with_peers)
    write_output(data, output)


@whitelist.command("list")
@click.pass_context
def whitelist_list(ctx: click.Context) -> None:
    """Liste les domaines de confiance et le DN attendu de leur opérateur."""
    from trust_space.models import TrustedDomain

    app = app_of(ctx)
    with app.db.transaction() as session:
        rows = session.scalars(select(TrustedDomain).order_by(TrustedDomain.domain)).all()
        for td in rows:
            route = f"{td.relay_host}:{td.relay_port}" if td.relay_host else "-"
            click.echo(f"{td.domain:30} {td.certificate_dn:60} {route}")
    click.echo(f"{len(rows)} domaine(s).", err=True)


@whitelist.command("route")
@click.argument("domain")
@click.argument("hostport")
@click.pass_context
def whitelist_route(ctx: click.Context, domain: str, hostport: str) -> None:
    """Où joindre le relais d'un domaine de confiance (HÔTE:PORT)."""
    from trust_space.models import TrustedDomain

    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.UsageError("HOST:PORT attendu, par exemple relais.pair.test:25")
    app = app_of(ctx)
    with app.db.transaction() as session:
        entry = session.scalar(select(TrustedDomain).where(TrustedDomain.domain == domain.lower()))
        if entry is None:
            raise NotFound(f"domaine {domain} absent de la liste blanche")
        entry.relay_host, entry.relay_port = host.strip("[]"), int(port)
        audit.record(session, actor="mss-cli", action="whitelist.route", target=entry.domain,
                     outcome="ok", request={"host": entry.relay_host, "port": entry.relay_port})
    click.echo(f"{domain} → {host}:{port}")


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


@whitelist.command("fetch")
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


@whitelist.command("history")
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

