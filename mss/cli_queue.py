"""Gateway administration: the queue, peer routes and trust, peer directories.

``mss queue list|show|retry|delete``, ``mss whitelist route DOMAIN HOST:PORT``,
``mss peers trust FILE…`` (``mss peer`` is the same group: its first name, kept working),
``mss directory import-peer FILE --domain D``; ``mss peers check|status`` are in
``mss/cli_peers.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
from sqlalchemy import select

from core import audit
from core.errors import MssError, NotFound
from mss.app import app_of


def register(main: click.Group) -> None:
    """Add the gateway's commands to ``main`` (and to its existing groups)."""
    main.add_command(queue_group)
    main.add_command(peer)
    # `mss peer …`, the group's first name, still works (hidden from the help: one group).
    main.add_command(click.Group("peer", commands=peer.commands, hidden=True, help=peer.help))
    for name, command in (("whitelist", whitelist_route), ("directory", import_peer)):
        group = main.commands.get(name)
        if isinstance(group, click.Group):
            group.add_command(command)



# ---------------------------------------------------------------- queue
@click.group("queue")
def queue_group() -> None:
    """File d'attente du relais : lister, détailler, relancer, supprimer."""


@queue_group.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def queue_list(ctx: click.Context, limit: int) -> None:
    """Messages en attente (plus anciens d'abord), sans contenu."""
    from gateway import queue as q

    app = app_of(ctx)
    with app.db.transaction() as session:
        messages = q.pending(session, limit)
        for m in messages:
            states = ",".join(sorted({f"{r.state.value}" for r in m.recipients}))
            click.echo(f"{m.id}  {m.created_at:%Y-%m-%d %H:%M:%S}  {m.size:>8}  "
                       f"<{m.envelope_from}>  {len(m.recipients)} dest.  {states}")
        depth = q.depth(session)
    click.echo(f"{len(messages)} message(s), {depth} remise(s) en attente.", err=True)


@queue_group.command("show")
@click.argument("queue_id")
@click.pass_context
def queue_show(ctx: click.Context, queue_id: str) -> None:
    """Enveloppe, destinataires et chronologie d'un message (jamais son contenu)."""
    from gateway import queue as q
    from gateway.models import QueuedMessage

    app = app_of(ctx)
    with app.db.transaction() as session:
        message = session.get(QueuedMessage, queue_id)
        events = q.timeline(session, queue_id)
        if message is None and not events:
            raise NotFound(f"message {queue_id} inconnu")
        if message is not None:
            click.echo(f"File {message.id} ({message.origin.value}), reçu {message.created_at}, "
                       f"{message.size} octets, de <{message.envelope_from}>, "
                       f"Message-ID {message.message_key}")
            for r in message.recipients:
                click.echo(f"  {r.kind.value:6} {r.address:40} {r.state.value:11} "
                           f"essais {r.attempts}  prochain {r.next_attempt_at:%H:%M:%S}  "
                           f"{r.last_code} {r.last_reason[:80]}")
        for e in events:
            click.echo(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.event:10} {e.recipient:40} {e.detail}")


@queue_group.command("retry")
@click.argument("queue_id")
@click.pass_context
def queue_retry(ctx: click.Context, queue_id: str) -> None:
    """Relance maintenant les remises en attente (ou en quarantaine) d'un message."""
    from gateway import queue as q
    from gateway.models import QueuedMessage

    app = app_of(ctx)
    with app.db.transaction() as session:
        count = q.retry_now(session, queue_id)
        if not count and session.get(QueuedMessage, queue_id) is None:
            raise NotFound(f"message {queue_id} inconnu (déjà remis ?)")
        audit.record(session, actor="mss-cli", action="queue.retry", target=queue_id,
                     outcome="ok", request={"recipients": count})
    click.echo(f"{count} remise(s) relancée(s).")


@queue_group.command("delete")
@click.argument("queue_id")
@click.pass_context
def queue_delete(ctx: click.Context, queue_id: str) -> None:
    """Supprime un message de la file (sa chronologie est conservée)."""
    from gateway import queue as q

    app = app_of(ctx)
    with app.db.transaction() as session:
        if not q.remove(session, queue_id):
            raise NotFound(f"message {queue_id} inconnu")
        audit.record(session, actor="mss-cli", action="queue.delete", target=queue_id,
                     outcome="ok")
    click.echo(f"Message {queue_id} supprimé de la file.")


# ---------------------------------------------------------------- routes, peers, directories
@click.command("route")
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


@click.group("peers")
def peer() -> None:
    """Opérateurs pairs : santé de leurs relais (check, status), autorités de certification
    de confiance (trust). « mss peer » est le même groupe."""


@peer.command("trust")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", help="Nom du fichier dans pki/peers/ (défaut : celui du fichier).")
@click.pass_context
def peer_trust(ctx: click.Context, files: tuple[Path, ...], name: str | None) -> None:
    """Fait confiance à l'autorité d'un pair : copie son ca.pem (et son crl.pem) dans
    DATA_DIR/pki/peers/ ; le relais la prend en compte sans redémarrage."""
    from certs.validation import TrustStore

    app = app_of(ctx)
    peers = app.settings.pki_dir / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(files):
        data = path.read_bytes()
        if b"BEGIN CERTIFICATE" in data:
            TrustStore.from_pem(data)  # a readable bundle with a root, or ConfigError
        elif b"BEGIN X509 CRL" not in data:
            raise MssError(f"{path} : ni certificat ni liste de révocation PEM")
        target = peers / (f"{name}-{index}.pem" if name else path.name)
        shutil.copyfile(path, target)
        click.echo(f"Copié : {target}")
    with app.db.transaction() as session:
        audit.record(session, actor="mss-cli", action="peer.trust", target=name or "",
                     outcome="ok", request={"files": [p.name for p in files]})


@click.command("import-peer")
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

