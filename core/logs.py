"""Logging set-up: one line per event, ids and addresses only (CONVENTIONS.md, 12)."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    """Log to stderr with timestamps; idempotent."""
    root = logging.getLogger()
    if any(getattr(h, "_mss", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._mss = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step
