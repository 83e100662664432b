"""``mss directory``: the CSV import, search and FHIR export of our directory, and the import of a
peer operator's FHIR directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy import select

from core import audit
from core.errors import MssError, NotFound
from mss.app import app_of
from mss.cli_io import read_input, report_import_errors, write_output
from trust_space.errors import ImportFailed


def register(main: click.Group) -> None:
    main.add_command(directory)


@click.group()
def directory() -> None:
    """Annuaire : import CSV, recherche, export FHIR."""


@directory.command("import")
@click.option("--professionals", "kind", flag_value="professionals",
              help="Le fichier décrit des professionnels.")
@click.option("--structures", "kind", flag_value="structures",
              help="Le fichier décrit des structures (FINESS).")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def directory_import(ctx: click.Context, kind: str | None, path: Path) -> None:
    """Importe PATH (CSV) en tout-ou-rien : à la moindre erreur, rien n'est écrit."""
    from trust_space.importers import import_professionals, import_structures

    if kind is None:
        raise click.UsageError("précisez --professionals ou --structures")
    data = read_input(path)
    rows = max(len(data.splitlines()) - 1, 0)
    importer = import_professionals if kind == "professionals" else import_structures
    app = app_of(ctx)
    try:
        with app.db.transaction() as session, click.progressbar(
            length=rows, label="Import", file=sys.stderr
        ) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            summary = importer(session, data, progress=progress)
            audit.record(session, actor="mss-cli", action=f"directory.import.{kind}",
                         target=path.name, request={"rows": rows}, outcome="ok")
    except ImportFailed as exc:
        report_import_errors(exc)
        raise MssError(f"import refusé, rien n'a été écrit : {len(exc.errors)} erreur(s)") from exc
    click.echo(f"Import terminé : {summary.created} créé(s), {summary.updated} mis à jour, "
               f"{summary.unchanged} inchangé(s).")


@directory.command("search")
@click.argument("text", required=False)
@click.option("--name", help="Nom ou prénom.")
@click.option("--profession")
@click.option("--specialty", help="Spécialité.")
@click.option("--city", help="Ville.")
@click.option("--postal-code", help="Code postal (ou son début).")
@click.option("--rpps")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
def directory_search(ctx: click.Context, text: str | None, name: str | None,
                     profession: str | None, specialty: str | None, city: str | None,
                     postal_code: str | None, rpps: str | None, as_json: bool,
                     limit: int) -> None:
    """Cherche dans l'annuaire publié (jamais la liste rouge ni les boîtes non publiées)."""
    from trust_space.directory import search

    app = app_of(ctx)
    with app.db.transaction() as session:
        entries = search(session, text=text, name=name, profession=profession,
                         specialty=specialty, city=city, postal_code=postal_code, rpps=rpps,
                         limit=limit)
    if as_json:
        click.echo(json.dumps([e.__dict__ for e in entries], ensure_ascii=False, indent=2,
                              default=str))
        return
    for e in entries:
        where = f"{e.postal_code} {e.city}".strip()
        click.echo(f"{e.address:40} {e.display_name:30} {e.profession or e.kind.value:20} {where}")
    click.echo(f"{len(entries)} résultat(s).", err=True)


@directory.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def directory_export(ctx: click.Context, output: Path | None) -> None:
    """Exporte l'annuaire publié en Bundle FHIR (JSON)."""
    from trust_space.fhir import export_directory

    app = app_of(ctx)
    with app.db.transaction() as session:
        bundle = export_directory(session, domain=app.settings.domain)
    write_output(json.dumps(bundle, ensure_ascii=False, indent=2).encode() + b"\n", output)


@directory.command("import-peer")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--domain", required=True, help="Domaine (liste blanche) de l'opérateur pair.")
@click.option("--merge", is_flag=True, help="N'oublie pas les boîtes absentes du fichier.")
@click.pass_context
def import_peer(ctx: click.Context, path: Path, domain: str, merge: bool) -> None:
    """Importe l'annuaire FHIR publié par un opérateur pair (ses boîtes et leurs certificats
    de chiffrement)."""
    from trust_space.fhir import import_directory
    from trust_space.models import TrustedDomain

    try:
        bundle = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise MssError(f"{path} : JSON illisible ({exc})") from exc
    app = app_of(ctx)
    with app.db.transaction() as session:
        entry = session.scalar(select(TrustedDomain).where(TrustedDomain.domain == domain.lower()))
        if entry is None:
            raise NotFound(f"domaine {domain} absent de la liste blanche")
        result = import_directory(session, bundle, operator=entry.operator, replace=not merge)
        audit.record(session, actor="mss-cli", action="directory.import_peer", target=domain,
                     outcome="ok", request={"created": result.created,
                                            "updated": result.updated,
                                            "removed": result.removed})
    click.echo(f"Annuaire de {domain} : {result.created} créée(s), {result.updated} mise(s) à "
               f"jour, {result.removed} retirée(s).")

