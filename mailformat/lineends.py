"""Line ends (RFC 5322 §2.2, RFC 5321 §2.3.8): where a lenient reader ends a line, and the
CRLF form a message takes on the wire.

Readers disagree on a bare CR or LF (Dovecot and Python's ``email`` end a line there, some
parsers do not), so the gateway refuses them in a header section (``mailformat.headers``);
what is left to do is sending: SMTP and LMTP carry CRLF only, and every line end, bare CR
included, becomes one, as Dovecot would have read it.
"""

from __future__ import annotations

import re

# CRLF first: "\r\n" is one line end, never a bare CR followed by a bare LF.
ANY_EOL = re.compile(rb"\r\n|\r|\n")


def to_crlf(raw: bytes) -> bytes:
    """``raw`` with every line end (CRLF, a bare CR, a bare LF) written CRLF."""
    return ANY_EOL.sub(b"\r\n", raw)
