"""`mss store`: the mail-store hosts of ``MSS_MAIL_STORES`` (issue #19) and which one holds a
mailbox (``mailbox.mail_store``, ``mailstore.stores``)."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from core import audit
from core.errors import ConfigError
from mss.app import app_of


def register(main: click.Group) -> None:
    main.add_command(store)


@click.group()
def store() -> None:
    """Magasins de courrier (plusieurs hôtes Dovecot) : liste, placement d'une boîte."""


@store.command("list")
@click.pass_context
def store_list(ctx: click.Context) -> None:
    """Liste les magasins de MSS_MAIL_STORES et le nombre de boîtes de chacun."""
    from trust_space.models import Mailbox, MailboxState

    app = app_of(ctx)
    stores = app.settings.stores
    if not stores:
        click.echo("Un seul magasin de courrier (MSS_MAIL_STORES est vide).")
        return
    with app.db.read() as session:
        where = func.coalesce(Mailbox.mail_store, stores[0].name)
        counts: dict[str, int] = {name: count for name, count in session.execute(
            select(where, func.count())
            .where(Mailbox.operator_id.is_(None), Mailbox.state != MailboxState.CLOSED)
            .group_by(where))}
    for i, s in enumerate(stores):
        mark = " (par défaut)" if i == 0 else ""
        click.echo(f"{s.name:20} {s.address:40} {counts.get(s.name, 0):6} boîte(s){mark}")
    for name in sorted(set(counts) - {s.name for s in stores}):
        click.echo(f"{name:20} {'(absent de MSS_MAIL_STORES)':40} {counts[name]:6} boîte(s)")


@store.command("place")
@click.argument("address")
@click.argument("name")
@click.option("--moved", is_flag=True,
              help="La boîte est déjà ouverte et son courrier a été copié sur NAME "
                   "(doveadm backup, voir le README) : enregistrer son nouveau magasin.")
@click.pass_context
def store_place(ctx: click.Context, address: str, name: str, moved: bool) -> None:
    """Place la boîte ADDRESS sur le magasin NAME : Dovecot et la passerelle l'y trouvent
    dès maintenant. Une boîte qui n'est plus en attente de validation a peut-être déjà du
    courrier sur son magasin : il faut --moved, après avoir copié ce courrier."""
    from mailstore import stores
    from trust_space.models import Mailbox, MailboxState

    app = app_of(ctx)
    with app.db.transaction() as session:
        box = session.scalars(select(Mailbox).where(Mailbox.address == address.lower(),
                                                    Mailbox.operator_id.is_(None))).first()
        if box is not None and box.state is not MailboxState.PENDING_VALIDATION and not moved:
            stores.check_store(app.settings, name)
            raise ConfigError(f"la boîte « {box.address} » est déjà ouverte : son courrier "
                              "reste sur son magasin actuel. Copiez-le d'abord (README, "
                              "« Plusieurs magasins »), puis relancez avec --moved")
        before = stores.place(session, app.settings, address, name)
        audit.record(session, actor="mss-cli", action="mailbox.store", target=address.lower(),
                     outcome="ok", request={"store": name, "before": before or "",
                                            "moved": moved})
    click.echo(f"Boîte {address.lower()} placée sur le magasin {name}.")
