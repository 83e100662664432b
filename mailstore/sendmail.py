"""The ``sendmail`` Dovecot runs for the mail its Sieve interpreter sends (vacation replies),
so that they leave through mss's gateway like any other message: authenticated, checked
against the trust space's rules (a recipient outside it is refused), signed, queued, traced.

Dovecot 2.3 (``lib-smtp/smtp-submit.c``) can either speak SMTP without authentication to
``submission_host`` or run ``sendmail_path`` as ``<program> [args] -i -f <sender> -- <rcpt>…``
with the message on standard input, in an empty environment, as the mail user (``vmail`` when
mss runs as root). ``mailstore.sieveconf`` copies this file beside ``dovecot.conf`` and sets
``sendmail_path = <python> -I <copy> <submit.json> %u``: Dovecot expands ``%u`` to the mailbox
whose script is running, so the message is submitted with that mailbox as SASL authorisation
identity (RFC 4616), by mss's SERVICE account for the mail store; the gateway decides whether
that mailbox may send it (``gateway.accept.auth``, ``trust_space.policy.may_send_as``). A Sieve
script
cannot choose the mailbox it speaks for: a ``vacation :from`` naming another address is refused
by the gateway's From check.

Standard library only: the mail user may not be able to read mss's virtual environment.
Exit codes are sysexits(3), as Dovecot reads them: 75 (temporary: Dovecot retries the
delivery later) when the gateway cannot be reached or answers 4xx; 77 when it refuses (5xx);
64/78 for a bad call or configuration. One line on standard error says what happened
(addresses and reply codes, never content); Dovecot writes it to its log.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import sys
from typing import TypedDict

EX_OK, EX_USAGE, EX_DATAERR, EX_NOPERM, EX_TEMPFAIL, EX_CONFIG = 0, 64, 65, 77, 75, 78
MAX_MESSAGE = 1024 * 1024  # a Sieve-made message (vacation) is a few kB


class SubmitConf(TypedDict):
    """``submit.json``, as ``mailstore.sieveconf`` writes it."""

    host: str
    port: int
    login: str
    secret: str
    ca: str


class Call:
    """What Dovecot asked: ``<submit.json> <user> -i -f <sender> -- <rcpt>…``."""

    def __init__(self, argv: list[str]) -> None:
        if len(argv) < 2:
            raise ValueError("usage: sendmail.py SUBMIT.json USER -i -f SENDER -- RCPT...")
        self.conf, self.user = argv[0], argv[1].strip().lower()
        rest = argv[2:]
        self.sender = ""
        self.recipients: list[str] = []
        i = 0
        while i < len(rest):
            arg = rest[i]
            if arg == "--":
                self.recipients = rest[i + 1:]
                break
            if arg == "-f" and i + 1 < len(rest):
                self.sender = rest[i + 1]
                i += 1
            i += 1
        if self.sender == "<>":
            self.sender = ""
        if not self.user or "@" not in self.user or not self.recipients:
            raise ValueError("utilisateur ou destinataires manquants")


def submit(call: Call, conf: SubmitConf, message: bytes) -> int:
    """Submit ``message``; the sysexits code."""
    context = ssl.create_default_context(cafile=str(conf["ca"]))
    host, port = str(conf["host"]), int(conf["port"])
    login, secret = str(conf["login"]), str(conf["secret"])
    # The gateway's submission refuses a null sender: the mailbox's own address instead
    # (Dovecot's sieve_vacation_send_from_recipient = yes gives it already).
    sender = call.sender or call.user
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.ehlo()
            smtp.auth("PLAIN", lambda challenge=None: f"{call.user}\0{login}\0{secret}",
                      initial_response_ok=True)
            code, text = smtp.mail(sender)
            if code != 250:
                return _refused(call, "MAIL FROM", code, text)
            for rcpt in call.recipients:
                code, text = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    return _refused(call, f"RCPT <{rcpt}>", code, text)
            code, text = smtp.data(message)
            if code != 250:
                return _refused(call, "DATA", code, text)
    except smtplib.SMTPResponseException as exc:
        return _refused(call, "AUTH", exc.smtp_code, exc.smtp_error)
    except (OSError, smtplib.SMTPException) as exc:
        _say(f"passerelle injoignable pour {call.user} ({type(exc).__name__})")
        return EX_TEMPFAIL
    return EX_OK  # silent: Dovecot logs whatever the program writes as an error


def _refused(call: Call, step: str, code: int, text: bytes | str) -> int:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    _say(f"refusé par la passerelle pour {call.user} ({step}) : {code} {reply[:200]}")
    return EX_TEMPFAIL if 400 <= code < 500 else EX_NOPERM


def _say(line: str) -> None:
    print(f"mss-sendmail: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        call = Call(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        _say(str(exc))
        return EX_USAGE
    try:
        with open(call.conf, encoding="utf-8") as fh:
            conf = json.load(fh)
    except (OSError, ValueError) as exc:
        _say(f"configuration illisible ({type(exc).__name__})")
        return EX_CONFIG
    message = sys.stdin.buffer.read(MAX_MESSAGE + 1)
    if len(message) > MAX_MESSAGE or not message:
        _say(f"message vide ou trop grand pour {call.user}")
        return EX_DATAERR
    return submit(call, conf, message)


if __name__ == "__main__":
    sys.exit(main())
