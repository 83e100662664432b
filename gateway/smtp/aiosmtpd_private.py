"""What aiosmtpd has no public hook for, in one small module (issue #18).

aiosmtpd's public surface is the handler hooks (``handle_MAIL``, ``handle_RCPT``,
``handle_DATA``, ``auth_<MECHANISM>``), ``push``, ``challenge_auth`` and the constructor's
options; the gateway uses those everywhere else. Three things need aiosmtpd's private parts:

- ``_getaddr``: the MAIL/RCPT path parser. The common form is read directly (the stdlib's
  RFC 5322 parser costs ~0.1 ms per address), and the stdlib's own bugs on odd input become a
  syntax error for the client instead of a relay failure.
- ``smtp_DATA``: aiosmtpd's, with the body read in blocks (``gateway.smtp.data``) rather than
  line by line, and without its debug log of every line (message content, CONVENTIONS.md 12).
  It uses ``_reader``, ``_writer``, ``_set_post_data_state`` and ``_call_handler_hook``.
- ``_auth_require_tls``: on the implicit-TLS port the whole connection is TLS (RFC 8314), so
  AUTH is allowed; the constructor's ``auth_require_tls=False`` would log a warning for
  every connection.

These follow aiosmtpd ``FOLLOWS``. ``tests/test_aiosmtpd_private.py`` fails when the
installed aiosmtpd's versions of the overridden methods differ from the ones followed
(``FOLLOWED``: a hash of their source) or a private name used here is gone: read the new
version, port the change, then update the hashes.
"""

from __future__ import annotations

import asyncio
import re

from aiosmtpd.smtp import MISSING, SMTP, syntax

from gateway.smtp.data import Outcome, read_body
from gateway.smtp.replies import TEXT_LINE_LIMIT, TOO_LONG, TOO_MUCH

FOLLOWS = "1.4.6"
# sha256 (first 16 hex digits) of inspect.getsource(aiosmtpd.smtp.SMTP.<method>) followed.
FOLLOWED = {"_getaddr": "0aeb21c56ac1260e", "smtp_DATA": "3a33f30d3fd6d02f"}
# aiosmtpd's private names used below.
PRIVATE_NAMES = ("_getaddr", "_reader", "_writer", "_set_post_data_state",
                 "_call_handler_hook", "_auth_require_tls")

# <dot-atom@dot-atom> followed by the end or by whitespace (then ESMTP parameters).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
                          r"(?:[ \t]+|\Z)")


class PrivateOverrides(SMTP):
    """aiosmtpd's SMTP with the overrides above."""

    def allow_auth_without_starttls(self) -> None:
        """The implicit-TLS port: the connection is TLS from its first byte."""
        self._auth_require_tls = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = _SIMPLE_PATH.match(arg)
        if simple and not arg.startswith("(", simple.end()):
            address = simple.group(1)
            if not (self.local_part_limit
                    and len(address.rpartition("@")[0]) > self.local_part_limit):
                return address, arg[simple.end():]
        # The stdlib's address parser raises more than HeaderParseError on some inputs
        # (IndexError on "a@", AttributeError on ".@["): an address it cannot read is a
        # syntax error for the client, not a relay failure.
        try:
            return super()._getaddr(arg)
        except Exception:  # noqa: BLE001 — whatever the parser's own bug
            return None, None

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 RCPT d'abord / need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntaxe : DATA / syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            body = await read_body(self._reader, size_limit=self.data_size_limit,
                                   line_limit=TEXT_LINE_LIMIT)
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:  # the client left mid-body: nothing to answer
            self._writer.close()
            return
        if body.outcome is not Outcome.OK:
            self._set_post_data_state()
            await self.push(TOO_LONG if body.outcome is Outcome.TOO_LONG else TOO_MUCH)
            return
        self.envelope.content = self.envelope.original_content = body.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)
