"""The local stand-in for the smarthost: e-mails to usual (non-secure) addresses written as
files, ``DATA_DIR/spool/mail/<time>-<random>.eml`` (mode 0600), where the demo and the tests
read them. Used by the webmail (one-time codes, registration news) and by the gateway (notices
of new messages) alike when ``MSS_SMARTHOST`` is empty, so that nothing that would go out in
production fails silently on the embedded default.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path


class FileSpool:
    """Writes each message to its own file in ``spool`` (created on first use)."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def __repr__(self) -> str:
        return f"FileSpool({self.spool})"

    def send(self, to: str, message: bytes) -> None:
        """Write ``message`` (RFC 5322 bytes); ``to`` is in the message itself.

        Raises:
            OSError: the spool cannot be written (disk full, permissions).
        """
        self.spool.mkdir(parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}.eml"
        fd = os.open(self.spool / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(message)


def mail_spool(data_dir: Path) -> Path:
    """Where ``FileSpool`` writes for the data directory ``data_dir``."""
    return data_dir / "spool" / "mail"
