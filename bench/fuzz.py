"""Fuzzing of mss's input surfaces with hypothesis (issue 7, "Hardening").

``python -m bench.fuzz --examples 100000`` spreads the examples over the targets below and
prints, per target, how many inputs actually ran, failures and time. ``tests/test_fuzz.py``
runs the same targets with a few dozen examples each in CI.

Targets (all real, on loopback):

- ``smtp_lines``: command lines on an authenticated submission session of a real gateway;
- ``smtp_data``: message content after a valid envelope (DATA);
- ``mime``: ``gateway.accept.opening.open_message`` (decrypt + verify) on MIME / S/MIME blobs;
- ``smime``: ``certs.smime.verify`` on mutations of a real signed message;
- ``whitelist``: ``trust_space.whitelist.import_whitelist`` (XML), rolled back;
- ``csv``: ``trust_space.importers.import_professionals`` / ``import_structures``, rolled back;
- ``web_login``, ``web_register``: the webmail's forms through Flask's test client (CSRF on).

Each asserts: no unhandled exception, every refusal a clear reply (an SMTP code 4xx/5xx with
text and never the internal ``4.3.0``; an ``MssError``; an HTTP status below 500), and a
bounded time per example (hypothesis ``deadline``).
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import smtplib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402

from certs import smime  # noqa: E402
from certs.validation import TrustStore  # noqa: E402
from core.errors import MssError  # noqa: E402
from gateway.accept.opening import open_message  # noqa: E402
from tests.gateway_fixtures import Operator, build_operator, start_operator  # noqa: E402
from tests.mailstore_fixtures import PASSWORD, open_tempdir  # noqa: E402
from trust_space.importers import import_professionals, import_structures  # noqa: E402
from trust_space.whitelist import import_whitelist  # noqa: E402

# What this fuzzer found (issue 7), all fixed and kept as reproducers in tests/test_fuzz.py:
# "VRFY a@" (the stdlib address parser's IndexError → 451 4.3.0), STARTTLS inside TLS
# (220 then a failed handshake instead of 503), certs.smime.sign on a non-ASCII or
# line-boundary Content-Type value (UnicodeEncodeError / ValueError → 451 4.3.0).
# Relative share of --examples per target: a web_login input costs an argon2 hash.
WEIGHTS = {"web_login": 0.25}

_REPLY = re.compile(r"^[2-5]\d\d[ -]")
_CSRF = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')
COMMANDS = ["MAIL FROM:", "RCPT TO:", "EHLO ", "HELO ", "NOOP ", "RSET", "AUTH ", "BDAT ",
            "DATA", "HELP ", "EXPN ", "VRFY ", "STARTTLS", "XCLIENT ", "", "QUIT"]


class _Rollback(Exception):
    """Raised inside a transaction to undo what an importer wrote."""


@dataclass
class Context:
    """What the targets run against; ``counts`` records inputs actually run per target."""

    operator: Operator
    web: Any  # a Flask application (webmail.create_app)
    store: TrustStore
    key: tuple[x509.Certificate, Any]  # a mailbox certificate and key, for decryption
    seeds: list[bytes]  # real signed and signed+encrypted messages, for mutations
    counts: dict[str, int] = field(default_factory=dict)
    _smtp: smtplib.SMTP | None = None

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    @property
    def sender(self) -> str:
        return self.operator.space.address("marie")

    def smtp(self) -> smtplib.SMTP:
        """An authenticated submission session, reopened when the server closed it."""
        if self._smtp is None:
            smtp = smtplib.SMTP("127.0.0.1", self.operator.port("submission"), timeout=10)
            smtp.starttls(context=self.operator.client_context())
            smtp.login(self.sender, PASSWORD)
            self._smtp = smtp
        return self._smtp

    def drop_smtp(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None


def _check_reply(code: int, text: bytes) -> None:
    line = f"{code} {text.decode(errors='replace')}"
    assert _REPLY.match(line) and text.strip(), f"réponse SMTP obscure : {line!r}"
    assert not text.startswith(b"4.3.0"), f"erreur interne du relais : {line!r}"


def _send_line(ctx: Context, line: bytes) -> None:
    smtp = ctx.smtp()
    smtp.send(line + b"\r\n")
    code, text = smtp.getreply()
    _check_reply(code, text)
    if code == 354:  # DATA accepted after a valid envelope: end it
        smtp.send(b".\r\n")
        _check_reply(*smtp.getreply())
    elif code == 334:  # AUTH challenge: cancel (RFC 4954 §4)
        smtp.send(b"*\r\n")
        _check_reply(*smtp.getreply())
    if code == 221:
        ctx.drop_smtp()


_line_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
smtp_line = st.tuples(st.sampled_from(COMMANDS), _line_bytes).map(
    lambda t: t[0].encode() + t[1])


def smtp_lines(ctx: Context, lines: list[bytes]) -> None:
    ctx.count("smtp_lines")
    try:
        for line in lines:
            _send_line(ctx, line)
        ctx.smtp().rset()
    except smtplib.SMTPServerDisconnected:
        ctx.drop_smtp()  # the server may close after QUIT or a line too long: still a reply


_header = st.tuples(st.sampled_from(["Subject", "From", "To", "Content-Type", "MIME-Version",
                                     "Content-Transfer-Encoding", "X-MSS-Trace", "Received",
                                     "Message-ID", "MSS-Security", "X-Random"]),
                    st.text(max_size=120)).map(lambda kv: (kv[0], _clean_header(*kv)))
mime_message = st.builds(
    lambda headers, body: ("".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8",
                                                                             "replace")
                           + b"\r\n" + body),
    st.lists(_header, max_size=8), st.binary(max_size=2000))


def _clean_header(name: str, value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def smtp_data(ctx: Context, raw: bytes) -> None:
    ctx.count("smtp_data")
    smtp = ctx.smtp()
    try:
        smtp.mail(ctx.sender)
        smtp.rcpt(ctx.operator.space.address("paul"))
        code, text = smtp.data(raw)
        _check_reply(code, text)
    except smtplib.SMTPDataError as exc:
        _check_reply(exc.smtp_code, exc.smtp_error)
        smtp.rset()
    except smtplib.SMTPServerDisconnected:
        ctx.drop_smtp()


def _smime_blob(ctx: Context) -> st.SearchStrategy[bytes]:
    ctypes = ['application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
              'application/pkcs7-mime; smime-type=signed-data',
              'multipart/signed; protocol="application/pkcs7-signature"; boundary="b"',
              "text/plain"]
    built = st.builds(lambda c, body: (f"Content-Type: {c}\r\nContent-Transfer-Encoding: "
                                       "base64\r\n\r\n").encode() + body,
                      st.sampled_from(ctypes), st.binary(max_size=1500))
    return st.one_of(built, mime_message, *(_mutations(seed) for seed in ctx.seeds),
                     *(_der_mutations(seed) for seed in ctx.seeds))


def _der_mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """A real S/MIME message with the CMS structure itself (its last base64 part, decoded)
    mutated, then encoded again: mutating the base64 text rarely yields ASN.1 that parses far
    enough to reach the certificates and attributes."""
    start = seed.rindex(b"\r\n\r\n") + 4
    end = seed.find(b"\r\n--", start)
    end = len(seed) if end == -1 else end
    der = base64.b64decode(seed[start:end])
    return _mutations(der).map(
        lambda blob: seed[:start] + base64.encodebytes(blob).replace(b"\n", b"\r\n")
        + seed[end:])


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` (a real signed message, or its CMS) with bytes flipped, cut or inserted."""
    def mutate(ops: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(seed)
        for kind, pos, value in ops:
            pos %= max(1, len(data))
            if kind == 0:
                data[pos] = value
            elif kind == 1:
                del data[pos:pos + value]
            else:
                data[pos:pos] = bytes([value]) * 3
        return bytes(data)
    return st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)),
                    min_size=1, max_size=6).map(mutate)


def mime(ctx: Context, raw: bytes, with_key: bool) -> None:
    ctx.count("mime")
    message, verdict = open_message(raw, key=ctx.key if with_key else None, store=ctx.store)
    assert isinstance(message, bytes) and verdict.result in ("pass", "fail", "none"), verdict


def smime_verify(ctx: Context, raw: bytes) -> None:
    ctx.count("smime")
    try:
        smime.verify(raw, ctx.store)
    except MssError as exc:
        assert exc.message, "refus sans explication"


def _rolled_back(ctx: Context, fn: Callable[[Any], object]) -> None:
    try:
        with ctx.operator.space.db.transaction() as session:
            fn(session)
            raise _Rollback
    except _Rollback:
        pass
    except MssError as exc:
        assert exc.message, "refus sans explication"


_xml_piece = st.sampled_from([
    '<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">', "</ListeBlanche>",
    "<Domaine>", "</Domaine>", "<Nom>autre.test</Nom>", "<Nom>", "</Nom>",
    "<DNCertificatOperateur>CN=autre.test,O=Autre</DNCertificatOperateur>",
    "<DateMAJ>2026-05-01T10:00:00Z</DateMAJ>", "<DateMAJ>x</DateMAJ>", '<!DOCTYPE x [',
    '<!ENTITY e "x">', "]>", "&e;", "<?xml version='1.0'?>", "<Description>", "</Description>"])
whitelist_xml = st.one_of(
    st.lists(st.one_of(_xml_piece, st.text(max_size=40)), max_size=25).map(
        lambda parts: "".join(parts).encode("utf-8", "replace")),
    st.binary(max_size=800))


def whitelist(ctx: Context, data: bytes) -> None:
    ctx.count("whitelist")
    _rolled_back(ctx, lambda s: import_whitelist(s, data, local_domains={"mss.test"}))


_cell = st.one_of(st.sampled_from(["10000000099", "640000099", "Médecin", "Jean", "Dupont",
                                   "64000", "Pau", "x@y.fr", "+33600000000", ""]),
                  st.text(max_size=30))
csv_file = st.builds(
    lambda header, rows, sep: "\n".join(sep.join(r) for r in [header, *rows]).encode(
        "utf-8", "replace"),
    st.lists(st.sampled_from(["rpps", "adeli", "prenom", "nom", "profession", "finess",
                              "code_postal", "ville", "email", "mobile", "inconnue"]),
             max_size=7),
    st.lists(st.lists(_cell, max_size=7), max_size=5), st.sampled_from([";", ","]))


def csv(ctx: Context, data: bytes, structures: bool) -> None:
    ctx.count("csv")
    importer = import_structures if structures else import_professionals
    _rolled_back(ctx, lambda s: importer(s, data))


def _post(ctx: Context, path: str, data: dict[str, str], form_path: str | None = None) -> None:
    client = ctx.web.test_client()
    page = client.get(form_path or path)
    token = _CSRF.search(page.get_data(as_text=True))
    assert token, f"pas de jeton CSRF sur {form_path or path} ({page.status_code})"
    response = client.post(path, data={"csrf_token": token.group(1), **data})
    assert response.status_code < 500, f"{path} : HTTP {response.status_code}"


_field = st.text(max_size=300)


def web_login(ctx: Context, identifier: str, password: str) -> None:
    ctx.count("web_login")
    _post(ctx, "/connexion", {"identifier": identifier, "password": password})


def web_register(ctx: Context, fields: dict[str, str]) -> None:
    ctx.count("web_register")
    client = ctx.web.test_client()
    page = client.get("/inscription")
    token = _CSRF.search(page.get_data(as_text=True))
    assert token, "pas de jeton CSRF sur /inscription"
    client.post("/inscription", data={"csrf_token": token.group(1)})
    page = client.get("/inscription/identite")
    token = _CSRF.search(page.get_data(as_text=True))
    assert token, f"pas de jeton CSRF sur /inscription/identite ({page.status_code})"
    response = client.post("/inscription/identite",
                           data={"csrf_token": token.group(1), **fields})
    assert response.status_code < 500, f"inscription : HTTP {response.status_code}"


register_fields = st.fixed_dictionaries({
    k: st.one_of(_field, st.just("")) for k in (
        "civility", "last_name", "first_name", "email", "email_confirm",
        "place_of_practice", "birth_day", "birth_month", "birth_year")})


def targets(ctx: Context) -> dict[str, tuple[Callable[..., None], float]]:
    """name → (hypothesis test taking no argument, deadline in ms)."""
    def wrap(fn: Callable[..., None], *strategies: st.SearchStrategy[Any]) -> Callable[..., None]:
        def test(args: tuple[Any, ...]) -> None:
            fn(ctx, *args)
        return given(st.tuples(*strategies))(test)
    return {
        "smtp_lines": (wrap(smtp_lines, st.lists(smtp_line, min_size=1, max_size=5)), 5000),
        "smtp_data": (wrap(smtp_data, mime_message), 5000),
        "mime": (wrap(mime, _smime_blob(ctx), st.booleans()), 2000),
        "smime": (wrap(smime_verify, _smime_blob(ctx)), 2000),
        "whitelist": (wrap(whitelist, whitelist_xml), 2000),
        "csv": (wrap(csv, csv_file, st.booleans()), 2000),
        "web_login": (wrap(web_login, _field, _field), 3000),
        "web_register": (wrap(web_register, register_fields), 3000),
    }


def run(ctx: Context, name: str, examples: int, deadline_ms: float,
        derandomize: bool = False) -> None:
    """Run one target with ``examples`` examples; raises on the first (shrunk) failure.
    ``derandomize``: the same inputs on every run (CI)."""
    test = targets(ctx)[name][0]
    configured = settings(max_examples=examples, deadline=deadline_ms, database=None,
                          derandomize=derandomize, print_blob=True,
                          suppress_health_check=list(HealthCheck))(test)
    configured()


def open_context(root: Path) -> Context:
    """A running operator (Dovecot + gateway) in ``root``, its webmail application, a
    mailbox key and the seed messages. The caller stops it with ``close_context``."""
    from webmail import create_app

    op = start_operator(build_operator(root, "mss.test", "Operateur Fuzz",
                                       rate_limit_per_minute=0))
    space = op.space
    with space.db.transaction() as session:
        issued = space.pki.issue_mailbox(session, space.address("paul"), "Paul Durand")
        signer = space.pki.issue_mailbox(session, space.address("marie"), "Marie Martin")
    plain = space.message("graine", body="Compte rendu.\r\n")
    signed = smime.sign(plain, signer.certificate, signer.private_key,  # type: ignore[arg-type]
                        [space.pki.issuing])
    sealed = smime.encrypt(signed, [issued.certificate])
    web = create_app(space.settings, space.db, {"TESTING": True, "RATE_LOGIN": "100000/minute",
                                                "RATE_CODE": "100000/minute",
                                                "RATE_REGISTER": "100000/minute"})
    return Context(op, web, TrustStore.with_peers(space.settings.pki_dir),
                   (issued.certificate, issued.private_key), [signed, sealed])


def close_context(ctx: Context) -> None:
    from tests.gateway_fixtures import stop_operator

    ctx.drop_smtp()
    stop_operator(ctx.operator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="total, all targets")
    parser.add_argument("--target", action="append", help="only these targets")
    args = parser.parse_args(argv)
    root = open_tempdir("mss-fuzz-")
    ctx = open_context(root)
    failures = 0
    try:
        names = args.target or list(targets(ctx))
        weight = sum(WEIGHTS.get(name, 1.0) for name in names)
        for name in names:
            share = max(1, round(args.examples * WEIGHTS.get(name, 1.0) / weight))
            start = time.monotonic()
            try:
                run(ctx, name, share, targets(ctx)[name][1])
                outcome = "ok"
            except Exception as exc:  # report and go on with the next target
                failures += 1
                outcome = f"ÉCHEC : {type(exc).__name__}: {str(exc)[:300]}"
            print(f"{name:13} {ctx.counts.get(name, 0):8} entrées  "
                  f"{time.monotonic() - start:7.1f} s  {outcome}", flush=True)
        print(f"total         {sum(ctx.counts.values()):8} entrées, {failures} échec(s)")
    finally:
        close_context(ctx)
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
