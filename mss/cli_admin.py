"""Administration commands: certificates, cards, audit trail."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography import x509
from sqlalchemy import select

from core import audit
from core.errors import MssError, NotFound
from mss.app import app_of


def register(main: click.Group) -> None:
    from mss import cli_accounts, cli_cert, cli_directory, cli_ops, cli_queue, cli_quota

    cli_cert.register(cert)
    cli_quota.register(main)
    main.add_command(cert)
    main.add_command(card)
    main.add_command(audit_group)
    cli_directory.register(main)
    cli_queue.register(main)  # after directory: it adds to the directory/whitelist groups
    cli_accounts.register(main)
    cli_ops.register(main)



# ---------------------------------------------------------------- certificates
@click.group()
def cert() -> None:
    """Certificats : émettre, renouveler, installer, révoquer, publier la liste de
    révocation."""


@cert.command("issue")
@click.argument("kind", type=click.Choice(["server", "mailbox", "client", "operator"]))
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Où écrire NAME.crt et NAME.key.")
@click.option("--display-name", default="", help="Nom affiché (certificat de boîte).")
@click.pass_context
def cert_issue(ctx: click.Context, kind: str, name: str, out_dir: Path, display_name: str) -> None:
    """Émet un certificat : server (NAME = nom d'hôte), mailbox (NAME = adresse),
    client (NAME = adresse de boîte applicative) ou operator (NAME = nom d'hôte du relais)."""
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


# ---------------------------------------------------------------- cards
@click.group()
def card() -> None:
    """Cartes CPS (jetons PKCS#11 ; SoftHSM2 pour la démonstration et les tests)."""


@card.command("provision")
@click.argument("identifier")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Code PIN de la carte (4 à 8 chiffres).")
@click.option("--label", help="Étiquette du jeton (défaut : CPS-<identifiant national>).")
@click.pass_context
def card_provision(ctx: click.Context, identifier: str, pin: str, label: str | None) -> None:
    """Crée la carte d'un professionnel (IDENTIFIER : RPPS, ADELI, identifiant national ou
    adresse de sa boîte personnelle). La clé est générée sur le jeton et n'en sort jamais."""
    from certs.pki import CardIdentity
    from trust_space.accounts import find_professional

    if not (pin.isdigit() and 4 <= len(pin) <= 8):
        raise MssError("le code PIN doit comporter de 4 à 8 chiffres")
    app = app_of(ctx)
    with app.db.transaction() as session:
        prof, address = find_professional(session, identifier)
        identity = CardIdentity(prof.national_id, prof.first_name, prof.last_name,
                                prof.profession, address)
        info = app.cards.provision(app.pki, session, identity, pin=pin, label=label)
        audit.record(session, actor="mss-cli", action="card.provision",
                     target=prof.national_id, request={"label": info.label}, outcome="ok")
    click.echo(f"Carte {info.label} créée pour {prof.display_name} ({prof.national_id}), "
               f"certificat {info.certificate.serial_number:x}")


@card.command("list")
@click.pass_context
def card_list(ctx: click.Context) -> None:
    """Liste les cartes (jetons) présentes."""
    for label in app_of(ctx).cards.list_cards():
        click.echo(label)


@card.command("read")
@click.argument("label")
@click.option("--pin", prompt=True, hide_input=True)
@click.pass_context
def card_read(ctx: click.Context, label: str, pin: str) -> None:
    """Lit l'identité portée par une carte (avec son code PIN)."""
    info = app_of(ctx).cards.read_identity(label, pin)
    ident = info.identity
    click.echo(f"{info.label} : {ident.first_name} {ident.last_name}, {ident.profession}, "
               f"identifiant national {ident.national_id}")


# ---------------------------------------------------------------- audit trail
@click.group("audit")
def audit_group() -> None:
    """Journal d'audit chaîné (ECO.4.1.2)."""


@audit_group.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Vérifie la chaîne de hachage du journal ; code de sortie 1 si elle est rompue."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        report = audit.verify(session)
    if not report.ok:
        where = f"enregistrement n° {report.first_bad_id}" if report.first_bad_id else "fin"
        raise MssError(f"journal d'audit altéré ({where}) : {report.reason}")
    click.echo(f"Journal d'audit intègre : {report.count} enregistrement(s).")


@audit_group.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--target", help="Seulement les actions sur cette cible (adresse, numéro…).")
@click.pass_context
def audit_list(ctx: click.Context, limit: int, target: str | None) -> None:
    """Affiche les derniers enregistrements (les plus récents d'abord)."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        for rec in audit.recent(session, limit, target):
            click.echo(f"{rec.id:6} {rec.at:%Y-%m-%d %H:%M:%S} {rec.actor:30} {rec.action:20} "
                       f"{rec.target:30} {rec.outcome} {rec.request}")


__all__ = ["register", "NotFound"]
