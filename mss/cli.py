"""The `mss` command. Each sub-command parses its input, calls one function of a package below
and prints the result; errors become a clear message and a non-zero exit code in one place
(``MssGroup.invoke``), never a traceback.

This module only assembles: the sub-commands live in ``mss/cli_*.py``, one module per command
or group, each taking its ``App`` from ``mss.app.app_of`` and importing no other sub-command
module (``tests/test_layers_mss.py`` fails on an import cycle)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from core.errors import MssError
from mss import (
    cli_accounts,
    cli_admin,
    cli_annuaire,
    cli_cert,
    cli_directory,
    cli_dns,
    cli_indicators,
    cli_ops,
    cli_peers,
    cli_queue,
    cli_quota,
    cli_run,
    cli_stores,
    cli_whitelist,
)

EXIT_ERROR = 1
EXIT_USAGE = 2


class MssGroup(click.Group):
    """Maps every MssError (and a dead database) to one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MssError as exc:
            click.secho(f"Erreur : {exc.message}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except OperationalError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig else "connexion impossible"
            click.secho(f"Erreur : base de données inaccessible ({reason})", fg="red", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=MssGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MSS_DATA_DIR", help="Répertoire de données (défaut : ./mss-data).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """mss — opérateur de messagerie sécurisée de santé."""
    # Files mss creates (database, keys, settings) are private unless made otherwise on purpose.
    os.umask(0o077)


for sub in (cli_run, cli_cert, cli_admin, cli_accounts, cli_directory, cli_whitelist, cli_peers,
            cli_queue, cli_annuaire, cli_dns, cli_indicators, cli_ops, cli_quota, cli_stores):
    sub.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
