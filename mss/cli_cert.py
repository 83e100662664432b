"""``mss cert renew server|operator|crl`` and ``mss cert install server|operator CERT``: our
own TLS certificates renewed in place (``certs.renewal``), each step audited."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from certs import renewal
from certs._x509util import as_utc, atomic_write, serial_hex
from certs.errors import RenewalError
from core import audit
from core.errors import MssError
from core.localtime import french_datetime
from mss.app import app_of

# How each running service takes the new pair (README, "Renouveler les certificats").
TAKEN_UP = {
    "server": ("passerelle (soumission STARTTLS et TLS implicite) : dès la connexion suivante",
               "webmail (HTTPS) : dès la connexion suivante",
               "Dovecot (IMAP) : rechargé par mss run (SIGHUP) dans les 2 secondes"),
    "operator": ("passerelle (port relais, envois vers les pairs) : dès la connexion suivante",),
}


def register(cert: click.Group) -> None:
    cert.add_command(cert_renew)
    cert.add_command(cert_install)



@click.command("renew")
@click.argument("kind", type=click.Choice(["server", "operator", "crl"]))
@click.option("--days", type=click.IntRange(1, 3650),
              help="Validité du nouveau certificat en jours (autorité de mss ; défaut 3 ans, "
                   "jamais au-delà de l'AC).")
@click.option("--csr", "csr_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Autre autorité (IGC Santé, AC publique) : nouvelle clé KIND.key.new et "
                   "demande PKCS#10 écrite dans ce fichier, à faire signer.")
@click.option("--dry-run", is_flag=True, help="Affiche ce qui changerait, sans rien écrire.")
@click.pass_context
def cert_renew(ctx: click.Context, kind: str, days: int | None, csr_path: Path | None,
               dry_run: bool) -> None:
    """Renouvelle le certificat serveur ou opérateur : même sujet et mêmes noms, nouvelle clé,
    l'ancien gardé en .prev ; « crl » republie la liste de révocation (comme « mss cert crl »)."""
    if kind == "crl":
        _renew_crl(ctx, days, csr_path, dry_run)
        return
    if days and csr_path:
        raise MssError("--days ne s'applique qu'à l'autorité de mss : avec --csr, l'autorité "
                       "qui signe fixe la validité")
    app = app_of(ctx)
    current = renewal.load_current(renewal.slot(app.settings.pki_dir, kind))
    _show(current)
    if csr_path is not None:
        _request(app, current, csr_path, dry_run)
    else:
        _renew_with_ca(app, current, days, dry_run)


def _renew_crl(ctx: click.Context, days: int | None, csr_path: Path | None,
               dry_run: bool) -> None:
    from mss.cli_admin import cert_crl

    if days or csr_path:
        raise MssError("--days et --csr ne s'appliquent pas à la liste de révocation")
    if dry_run:
        click.echo(f"Publierait une nouvelle CRL dans {app_of(ctx).pki.crl_path} "
                   "(rien n'a été écrit : --dry-run).")
        return
    ctx.invoke(cert_crl)  # one implementation: `mss cert crl`


def _show(current: renewal.Current) -> None:
    cert = current.certificate
    click.echo(f"{current.slot.label.capitalize()} actuel : {current.slot.cert_path}")
    click.echo(f"  sujet   : {cert.subject.rfc4514_string()}")
    click.echo(f"  noms    : {', '.join(renewal.names(cert)) or '—'}")
    click.echo(f"  émetteur: {cert.issuer.rfc4514_string()}")
    click.echo(f"  numéro de série {serial_hex(cert.serial_number)}, jusqu'au "
               f"{french_datetime(cert.not_valid_after_utc)} ({current.days_left():.1f} j)")


def _renew_with_ca(app, current: renewal.Current, days: int | None,  # type: ignore[no-untyped-def]
                   dry_run: bool) -> None:
    from certs.pki import BACKDATE, LEAF_DAYS

    where, pki = current.slot, app.pki
    if not renewal.issued_by(current.certificate, pki.issuing):
        raise RenewalError(renewal.not_ours(current))
    if dry_run:
        until = min(as_utc(None) - BACKDATE + timedelta(days=days or LEAF_DAYS),
                    pki.issuing.not_valid_after_utc)
        click.echo(f"Renouvellerait par l'autorité de mss : nouvelle clé, même sujet et mêmes "
                   f"noms, jusqu'au {french_datetime(until)} ; {where.cert_path.name} et "
                   f"{where.key_path.name} remplacés, les actuels gardés en .prev.")
        click.echo("Rien n'a été écrit (--dry-run).")
        return
    before = current.days_left()
    with app.db.transaction() as session:
        issued = renewal.renew_with_ca(pki, session, current, days)
        new = issued.certificate
        audit.record(session, actor="mss-cli", action="cert.renew", target=where.kind,
                     request={"method": "ca", "previous": serial_hex(current.certificate
                                                                     .serial_number),
                              "serial": serial_hex(new.serial_number),
                              "not_after": new.not_valid_after_utc.isoformat()},
                     outcome="ok")
        renewal.swap(where, issued.cert_pem(), issued.key_pem())
    click.echo(f"{where.label.capitalize()} renouvelé par l'autorité de mss : numéro de série "
               f"{serial_hex(new.serial_number)}, jusqu'au "
               f"{french_datetime(new.not_valid_after_utc)}")
    click.echo(f"  jours restants : {before:.1f} → {renewal.days_left(new):.1f}")
    _written(where)


def _request(app, current: renewal.Current, csr_path: Path,  # type: ignore[no-untyped-def]
             dry_run: bool) -> None:
    where = current.slot
    waiting = where.pending_key_path.exists()
    if dry_run:
        which = "réutiliserait la clé en attente" if waiting else "créerait une nouvelle clé"
        click.echo(f"Écrirait une demande de certificat (même sujet, mêmes noms) dans {csr_path} "
                   f"et {which} {where.pending_key_path} ; le certificat en service ne change "
                   "pas. Rien n'a été écrit (--dry-run).")
        return
    key, created = renewal.pending_key(where)
    csr = renewal.request(current, key)
    try:
        atomic_write(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise MssError(f"impossible d'écrire {csr_path} ({exc.strerror})") from None
    with app.db.transaction() as session:
        audit.record(session, actor="mss-cli", action="cert.renew", target=where.kind,
                     request={"method": "csr", "key": "new" if created else "pending"},
                     outcome="ok")
    click.echo(f"Demande de certificat (PKCS#10) écrite : {csr_path}")
    if created:
        click.echo(f"Nouvelle clé : {where.pending_key_path} (mode 0600, ne la transmettez pas)")
    else:
        click.echo(f"Clé en attente réutilisée : {where.pending_key_path} (une demande est "
                   "peut-être déjà chez l'autorité ; supprimez ce fichier pour en créer une autre)")
    authority = "l'IGC Santé" if where.kind == "operator" else "votre autorité de certification"
    click.echo(f"Faites-la signer par {authority}, puis : mss cert install {where.kind} "
               "CERT.pem [--chain CHAINE.pem]")


@click.command("install")
@click.argument("kind", type=click.Choice(["server", "operator"]))
@click.argument("cert_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chain", "chain_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Certificats de l'autorité (intermédiaires), si CERT ne les contient pas.")
@click.option("--new-subject", is_flag=True,
              help="Certificat opérateur : accepte un autre DN que l'actuel (à faire publier "
                   "d'abord dans la liste blanche).")
@click.option("--dry-run", is_flag=True, help="Vérifie et affiche, sans rien installer.")
@click.pass_context
def cert_install(ctx: click.Context, kind: str, cert_file: Path, chain_file: Path | None,
                 new_subject: bool, dry_run: bool) -> None:
    """Installe le certificat signé pour la clé en attente (« mss cert renew KIND --csr »)
    après avoir vérifié clé, dates, usage et chaîne ; l'ancien est gardé en .prev."""
    app = app_of(ctx)
    where = renewal.slot(app.settings.pki_dir, kind)
    current = renewal.load_current(where)
    renewal.load_pending(where)  # first: without it, no file given can be right
    certs = renewal.read_certificates(cert_file)
    chain = renewal.read_certificates(chain_file) if chain_file else []
    checked = renewal.check_install(current, certs, chain,
                                    renewal.install_store(app.settings.pki_dir),
                                    new_subject=new_subject)
    leaf = checked.leaf
    click.echo(f"Certificat pour la clé en attente : {leaf.subject.rfc4514_string()}")
    click.echo(f"  noms    : {', '.join(renewal.names(leaf)) or '—'}")
    click.echo(f"  émetteur: {leaf.issuer.rfc4514_string()}")
    click.echo(f"  jusqu'au {french_datetime(leaf.not_valid_after_utc)} "
               f"({renewal.days_left(leaf):.1f} j)")
    if checked.anchor:
        click.echo(f"  chaîne vérifiée jusqu'à « {checked.anchor} »")
    for note in checked.notes:
        click.echo(f"  Attention : {note}")
    if dry_run:
        click.echo("Rien n'a été installé (--dry-run).")
        return
    with app.db.transaction() as session:
        audit.record(session, actor="mss-cli", action="cert.install", target=kind,
                     request={"previous": serial_hex(current.certificate.serial_number),
                              "serial": serial_hex(leaf.serial_number),
                              "issuer": leaf.issuer.rfc4514_string(),
                              "not_after": leaf.not_valid_after_utc.isoformat(),
                              "chain_verified": checked.anchor is not None},
                     outcome="ok")
        renewal.install(checked, where)
    click.echo(f"{where.label.capitalize()} installé ; jours restants : "
               f"{current.days_left():.1f} → {renewal.days_left(leaf):.1f}")
    _written(where)


def _written(where: renewal.Slot) -> None:
    click.echo(f"  {where.cert_path}, {where.key_path} (clé privée, mode 0600) ; précédents : "
               f"{renewal.Slot.prev(where.cert_path).name}, "
               f"{renewal.Slot.prev(where.key_path).name}")
    click.echo("Prise en compte sans redémarrage, pour les nouvelles connexions :")
    for line in TAKEN_UP[where.kind]:
        click.echo(f"  {line}")
