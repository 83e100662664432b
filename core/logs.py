"""Logging set-up: one line per event, ids and addresses only (CONVENTIONS.md, 12)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class _Handler(logging.StreamHandler[TextIO]):
    """mss's own stderr handler, recognised by its ``_mss`` mark so that set-up runs once."""

    _mss = True


def configure(level: str = "INFO") -> None:
    """Log to stderr with timestamps; idempotent."""
    root = logging.getLogger()
    if any(getattr(h, "_mss", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = _Handler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step
