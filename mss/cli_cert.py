"""``mss cert``: certificates issued by our authority (``issue``, ``revoke``, ``list``), the
revocation list (``crl``), how long ours have left (``status``), and ``renew server|operator|crl``
and ``install server|operator CERT``: our own TLS certificates renewed in place
(``certs.renewal``), each step audited."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from certs import renewal
from certs._x509util import as_utc, atomic_write, serial_hex
from certs.errors import RenewalError
from core import audit
from core.errors import MssError
from core.localtime import french_datetime
from mss.app import App, app_of

# How each running service takes the new pair (README, "Renouveler les certificats").
TAKEN_UP = {
    "server": ("passerelle (soumission STARTTLS et TLS implicite) : dès la connexion suivante",
               "webmail (HTTPS) : dès la connexion suivante",
               "Dovecot (IMAP) : rechargé par mss run (SIGHUP) dans les 2 secondes"),
    "operator": ("passerelle (port relais, envois vers les pairs) : dès la connexion suivante",),
}


def register(main: click.Group) -> None:
    main.add_command(cert)


@click.group()
def cert() -> None:
    """Certificats : émettre, renouveler, installer, révoquer, publier la liste de
    révocation."""


@cert.command("issue")
@click.argument("kind", type=click.Choice(["server", "mailbox", "client", "operator",
                                           "lmtp"]))
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Où écrire NAME.crt et NAME.key.")
@click.option("--display-name", default="", help="Nom affiché (certificat de boîte).")
@click.pass_context
def cert_issue(ctx: click.Context, kind: str, name: str, out_dir: Path, display_name: str) -> None:
    """Émet un certificat : server (NAME = nom d'hôte), mailbox (NAME = adresse),
    client (NAME = adresse de boîte applicative), operator (NAME = nom d'hôte du relais) ou
    lmtp (NAME = nom de l'hôte d'une passerelle : son certificat client pour MSS_LMTP_URL
    lmtps://, à indiquer dans MSS_LMTP_CLIENT_CERT et MSS_LMTP_CLIENT_KEY)."""
    from mailstore.lmtps import LMTP_CLIENT_NAME
    from mss.setup import write_pair

    app = app_of(ctx)
    with app.db.transaction() as session:
        if kind == "server":
            issued = app.pki.issue_server(session, [name])
        elif kind == "mailbox":
            _require_address(name)
            issued = app.pki.issue_mailbox(session, name, display_name or name)
        elif kind == "client":
            _require_address(name)
            issued = app.pki.issue_client(session, display_name or name, name)
        elif kind == "lmtp":
            issued = app.pki.issue_client(session, f"{LMTP_CLIENT_NAME} {name}")
        else:
            issued = app.pki.issue_operator(session, [name], app.settings.operator_name)
        serial = format(issued.certificate.serial_number, "x")
        audit.record(session, actor="mss-cli", action="cert.issue", target=name,
                     request={"kind": kind, "serial": serial}, outcome="ok")
    crt, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    write_pair(issued, crt, key)
    click.echo(f"Certificat {kind} émis, numéro de série {serial}")
    click.echo(f"  {crt}\n  {key} (clé privée, mode 0600)")


def _require_address(value: str) -> None:
    if "@" not in value or value.startswith("@") or value.endswith("@"):
        raise MssError(f"« {value} » n'est pas une adresse de messagerie")


@cert.command("revoke")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              type=click.Choice([r.value for r in x509.ReasonFlags]),
              help="Motif (RFC 5280 §5.3.1).")
@click.pass_context
def cert_revoke(ctx: click.Context, serial: str, reason: str) -> None:
    """Révoque le certificat de numéro de série SERIAL (hexadécimal) et republie la CRL."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        app.pki.revoke(session, serial, reason)
        app.pki.make_crl(session)
        audit.record(session, actor="mss-cli", action="cert.revoke", target=serial.lower(),
                     request={"reason": reason}, outcome="ok")
    click.echo(f"Certificat {serial.lower()} révoqué ; CRL publiée : {app.pki.crl_path}")


@cert.command("crl")
@click.pass_context
def cert_crl(ctx: click.Context) -> None:
    """(Re)génère la liste de révocation DATA_DIR/pki/crl.pem."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        crl = app.pki.make_crl(session)
    click.echo(f"CRL publiée : {app.pki.crl_path} ({len(list(crl))} certificat(s) révoqué(s), "
               f"prochaine mise à jour {crl.next_update_utc:%Y-%m-%d %H:%M} UTC)")


@cert.command("list")
@click.option("--kind", type=click.Choice(["server", "mailbox", "card", "client", "operator"]))
@click.pass_context
def cert_list(ctx: click.Context, kind: str | None) -> None:
    """Liste les certificats émis par l'autorité."""
    from certs.models import IssuedCertificate

    app = app_of(ctx)
    with app.db.transaction() as session:
        query = select(IssuedCertificate).order_by(IssuedCertificate.id)
        if kind:
            query = query.where(IssuedCertificate.kind == kind)
        for row in session.scalars(query):
            state = f"révoqué ({row.revocation_reason})" if row.revoked_at else "valide"
            click.echo(f"{row.serial:40} {row.kind.value:9} {row.subject_key:40} "
                       f"{row.not_after:%Y-%m-%d} {state}")


_STATUS_LABELS = {"server": "certificat serveur", "operator": "certificat opérateur",
                  "issuing_ca": "AC émettrice", "root_ca": "AC racine", "ca": "chaîne de l'AC",
                  "crl": "liste de révocation"}


@cert.command("status")
@click.option("--warn-days", default=30, show_default=True, type=click.IntRange(0, 3650),
              help="Seuil d'alerte des certificats, en jours.")
@click.option("--crl-warn-days", default=1, show_default=True, type=click.IntRange(0, 365),
              help="Seuil d'alerte de la CRL, en jours (mss run la renouvelle à 2 jours).")
@click.pass_context
def cert_status(ctx: click.Context, warn_days: int, crl_warn_days: int) -> None:
    """Jours restants des certificats serveur, opérateur et de l'AC et de la prochaine mise
    à jour de la CRL (les mêmes valeurs que les métriques mss_certificate_expiry_days et
    mss_crl_next_update_days). Code de sortie 1 si l'un est sous le seuil ou illisible."""
    from certs import expiry
    from core.localtime import french_datetime

    all_ok = True
    for found in expiry.status(app_of(ctx).settings.pki_dir):
        label = _STATUS_LABELS.get(found.label, found.label)
        if found.days is None:
            all_ok = False
            click.echo(f"[ÉCHEC] {label:22} {found.path} : {found.error}")
            continue
        ok = found.days >= (crl_warn_days if found.label == "crl" else warn_days)
        all_ok = all_ok and ok
        click.echo(f"[{'OK  ' if ok else 'ATTN'}] {label:22} {found.days:8.1f} j  "
                   f"(jusqu'au {french_datetime(found.until)}) {found.subject}")
    if not all_ok:
        raise SystemExit(1)


@cert.command("renew")
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


def _renew_with_ca(app: App, current: renewal.Current, days: int | None,
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


def _request(app: App, current: renewal.Current, csr_path: Path,
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


@cert.command("install")
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
