"""Directory and whitelist commands."""

from __future__ import annotations

import json
from pathlib import Path

import click
from cryptography import x509

from core import audit
from core.errors import MssError
from mss.app import app_of
from trust_space.errors import ImportFailed

MAX_SHOWN_ERRORS = 50


def register(main: click.Group) -> None:
    from mss import cli_whitelist

    main.add_command(directory)
    main.add_command(whitelist)
    cli_whitelist.register(whitelist)



def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MssError(f"{path} : lecture impossible ({exc.strerror})") from exc


def _write_out(data: bytes, out: Path | None) -> None:
    if out is None:
        click.echo(data.decode("utf-8"), nl=False)
    else:
        out.write_bytes(data)
        click.echo(f"Écrit : {out}", err=True)


def _report_import_errors(exc: ImportFailed) -> None:
    """Every row error, one per line (up to a limit), then the one-line summary."""
    for err in exc.errors[:MAX_SHOWN_ERRORS]:
        click.echo(f"  {err}", err=True)
    if len(exc.errors) > MAX_SHOWN_ERRORS:
        click.echo(f"  … et {len(exc.errors) - MAX_SHOWN_ERRORS} autre(s)", err=True)


# ---------------------------------------------------------------- directory
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
    data = _read(path)
    rows = max(len(data.splitlines()) - 1, 0)
    importer = import_professionals if kind == "professionals" else import_structures
    app = app_of(ctx)
    try:
        with app.db.transaction() as session, click.progressbar(
            length=rows, label="Import", file=click.get_text_stream("stderr")
        ) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            summary = importer(session, data, progress=progress)
            audit.record(session, actor="mss-cli", action=f"directory.import.{kind}",
                         target=path.name, request={"rows": rows}, outcome="ok")
    except ImportFailed as exc:
        _report_import_errors(exc)
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
    _write_out(json.dumps(bundle, ensure_ascii=False, indent=2).encode() + b"\n", output)


# ---------------------------------------------------------------- whitelist
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
    from mss.cli_whitelist import print_changes
    from trust_space.whitelist_history import apply_whitelist

    data = _read(path)
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
        _report_import_errors(exc)
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
    _write_out(data, output)


@whitelist.command("list")
@click.pass_context
def whitelist_list(ctx: click.Context) -> None:
    """Liste les domaines de confiance et le DN attendu de leur opérateur."""
    from sqlalchemy import select

    from trust_space.models import TrustedDomain

    app = app_of(ctx)
    with app.db.transaction() as session:
        rows = session.scalars(select(TrustedDomain).order_by(TrustedDomain.domain)).all()
        for td in rows:
            route = f"{td.relay_host}:{td.relay_port}" if td.relay_host else "-"
            click.echo(f"{td.domain:30} {td.certificate_dn:60} {route}")
    click.echo(f"{len(rows)} domaine(s).", err=True)
