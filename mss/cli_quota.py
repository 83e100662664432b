"""``mss quota``: which mailboxes are nearly full — the addresses behind the
``mss_mailboxes_quota_over`` gauges, which carry counts only (``mailstore.quota_usage``)."""

from __future__ import annotations

import click

from mailstore import quota_usage
from mailstore.config import DovecotPaths
from mss.app import app_of


def register(main: click.Group) -> None:
    main.add_command(quota_cmd)


@click.command("quota")
@click.option("--over", default=80, show_default=True, type=click.IntRange(0, 1000),
              help="Seuil, en pourcentage du quota.")
@click.pass_context
def quota_cmd(ctx: click.Context, over: int) -> None:
    """Boîtes remplies à OVER % de leur quota ou plus, la plus pleine d'abord (Dovecot en
    service sur ce répertoire de données : doveadm quota get -A)."""
    usages = quota_usage.read_all(DovecotPaths.from_settings(app_of(ctx).settings))
    summary = quota_usage.summarise(usages)
    counts = ", ".join(f"{count} à {t} %" for t, count in sorted(summary.over.items()))
    click.echo(f"{summary.mailboxes} boîte(s) mesurée(s) : {counts} ou plus ; la plus pleine "
               f"à {summary.max_ratio * 100:.1f} %")
    chosen = [u for u in usages if quota_usage.at_or_over(u, over)]  # as the gauges count
    for usage in sorted(chosen, key=lambda u: -(u.ratio or 0.0)):
        limit = f"{usage.limit_kib / 1024:.1f} Mo" if usage.limit_kib else "illimité"
        click.echo(f"  {usage.address:45} {usage.used_kib / 1024:8.1f} Mo / {limit:>10}  "
                   f"{(usage.ratio or 0.0) * 100:5.1f} %  ({usage.messages} message(s))")
    if not chosen:
        click.echo(f"Aucune boîte à {over} % de son quota ou plus.")
