"""``mss queue list|show|retry|delete``: the relay's durable queue, never a message's content."""

from __future__ import annotations

import click

from core import audit
from core.errors import NotFound
from mss.app import app_of


def register(main: click.Group) -> None:
    main.add_command(queue_group)


@click.group("queue")
def queue_group() -> None:
    """File d'attente du relais : lister, détailler, relancer, supprimer."""


@queue_group.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def queue_list(ctx: click.Context, limit: int) -> None:
    """Messages en attente (plus anciens d'abord), sans contenu."""
    from spool import queue as q

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
    from spool import queue as q
    from spool.models import QueuedMessage

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
    from spool import queue as q
    from spool.models import QueuedMessage

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
    from spool import queue as q

    app = app_of(ctx)
    with app.db.transaction() as session:
        if not q.remove(session, queue_id):
            raise NotFound(f"message {queue_id} inconnu")
        audit.record(session, actor="mss-cli", action="queue.delete", target=queue_id,
                     outcome="ok")
    click.echo(f"Message {queue_id} supprimé de la file.")
