"""The files sub-commands read and write, and an import's row errors, reported the same way by
every command (``mss directory`` and ``mss whitelist``). No command here."""

from __future__ import annotations

from pathlib import Path

import click

from core.errors import MssError
from trust_space.errors import ImportFailed

MAX_SHOWN_ERRORS = 50


def read_input(path: Path) -> bytes:
    """The bytes of ``path``.

    Raises:
        MssError: unreadable, in French.
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MssError(f"{path} : lecture impossible ({exc.strerror})") from exc


def write_output(data: bytes, out: Path | None) -> None:
    """``data`` into ``out``, or on standard output without it."""
    if out is None:
        click.echo(data.decode("utf-8"), nl=False)
    else:
        out.write_bytes(data)
        click.echo(f"Écrit : {out}", err=True)


def report_import_errors(exc: ImportFailed) -> None:
    """Every row error, one per line (up to a limit), then the one-line summary."""
    for err in exc.errors[:MAX_SHOWN_ERRORS]:
        click.echo(f"  {err}", err=True)
    if len(exc.errors) > MAX_SHOWN_ERRORS:
        click.echo(f"  … et {len(exc.errors) - MAX_SHOWN_ERRORS} autre(s)", err=True)
