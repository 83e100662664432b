"""`mss annuaire`: the national directory feed (issue #20) — what is waiting or refused, and
the operator's two actions, send again and mark resolved (audited like the webmail's)."""

from __future__ import annotations

import json

import click

from core import audit
from mss.app import app_of
from trust_space import annuaire
from trust_space.models import DirectoryFeed, FeedState


def register(main: click.Group) -> None:
    main.add_command(annuaire_group)



@click.group("annuaire")
def annuaire_group() -> None:
    """Annuaire national (Annuaire Santé) : état du flux, renvoi, résolution."""


def _row(row: DirectoryFeed) -> dict[str, object]:
    return {"id": row.id, "created_at": row.created_at.isoformat(timespec="seconds"),
            "address": row.address, "event": row.event.value, "state": row.state.value,
            "attempts": row.attempts, "target": f"{row.resource}?identifier={row.identifier}",
            "last_status": row.last_status, "last_answer": row.last_answer}


@annuaire_group.command("status")
@click.option("--state", "state", type=click.Choice([s.value for s in FeedState]),
              help="Seulement les envois dans cet état.")
@click.option("--all", "show_all", is_flag=True, help="Aussi les envois terminés.")
@click.option("--json", "as_json", is_flag=True, help="Sortie JSON.")
@click.pass_context
def status(ctx: click.Context, state: str | None, show_all: bool, as_json: bool) -> None:
    """Envois par état, puis ceux qui attendent (ou tous avec --all)."""
    app = app_of(ctx)
    with app.db.transaction() as session:
        counts = annuaire.counts(session)
        rows = annuaire.entries(session, FeedState(state) if state else None)
        if not (state or show_all):
            rows = [r for r in rows if r.state not in annuaire.FINAL]
        data = [_row(r) for r in rows]
    if as_json:
        click.echo(json.dumps({"enabled": bool(app.settings.annuaire_url),
                               "counts": {s.value: n for s, n in counts.items()},
                               "entries": data}, ensure_ascii=False, indent=2))
        return
    click.echo("Flux " + (f"actif vers {app.settings.annuaire_url}" if app.settings.annuaire_url
                          else "désactivé (MSS_ANNUAIRE_URL vide)"))
    click.echo(", ".join(f"{annuaire.STATE_FR[s]} : {n}" for s, n in counts.items()))
    for r in rows:
        click.echo(f"{r.id:>6} {r.created_at:%Y-%m-%d %H:%M} {r.address:40} "
                   f"{annuaire.EVENT_FR[r.event]:22} {annuaire.STATE_FR[r.state]} "
                   f"({r.attempts} essai(s))" + (f" — {r.last_answer}" if r.last_answer else ""))


def _act(ctx: click.Context, feed_id: int, action: str) -> DirectoryFeed:
    app = app_of(ctx)
    do = annuaire.resend if action == "annuaire.resend" else annuaire.resolve
    with app.db.transaction() as session:
        row = do(session, feed_id)
        audit.record(session, actor="mss-cli", action=action, target=row.address,
                     request={"id": row.id, "event": row.event.value}, outcome="ok")
        return row


@annuaire_group.command("resend")
@click.argument("feed_id", type=int)
@click.pass_context
def resend(ctx: click.Context, feed_id: int) -> None:
    """Renvoie l'envoi FEED_ID (le même PATCH) dès le prochain tour."""
    row = _act(ctx, feed_id, "annuaire.resend")
    click.echo(f"Envoi {row.id} ({row.address}) remis dans la file.")


@annuaire_group.command("resolve")
@click.argument("feed_id", type=int)
@click.pass_context
def resolve(ctx: click.Context, feed_id: int) -> None:
    """Marque l'envoi FEED_ID comme résolu à la main (les suivants de l'adresse partent)."""
    row = _act(ctx, feed_id, "annuaire.resolve")
    click.echo(f"Envoi {row.id} ({row.address}) marqué résolu.")
