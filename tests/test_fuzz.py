"""CI's short fuzzing run (issue 7): every target of ``bench.fuzz`` with a few dozen
generated inputs against a real gateway, Dovecot, database and webmail application. The long
run is ``python -m bench.fuzz --examples 100000`` (README, "Benchmarks")."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench import fuzz
from tests.mailstore_fixtures import open_tempdir

pytestmark = pytest.mark.timeout(240)

EXAMPLES = {"smtp_lines": 40, "smtp_data": 25, "mime": 60, "smime": 60, "whitelist": 60,
            "csv": 60, "web_login": 30, "web_register": 20}


@pytest.fixture(scope="module")
def ctx() -> Iterator[fuzz.Context]:
    root = open_tempdir("mss-fuzz-")
    context = fuzz.open_context(root)
    yield context
    fuzz.close_context(context)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_fuzz_target(ctx: fuzz.Context, target: str) -> None:
    before = ctx.counts.get(target, 0)
    fuzz.run(ctx, target, EXAMPLES[target], fuzz.targets(ctx)[target][1], derandomize=True)
    assert ctx.counts.get(target, 0) > before


# ------------------------------------------------------------------ found by the long run
# Reproducers of the bugs ``python -m bench.fuzz`` found; each was a 451 4.3.0 or a traceback.
def test_vrfy_with_an_empty_domain_is_a_syntax_error(ctx: fuzz.Context) -> None:
    smtp = ctx.smtp()
    smtp.send(b"VRFY a@\r\n")
    code, text = smtp.getreply()
    assert code == 502 and not text.startswith(b"4.3.0"), (code, text)
    assert smtp.noop()[0] == 250  # the session goes on
    ctx.drop_smtp()


@pytest.mark.parametrize("line", [b"MAIL FROM:.@[", b"RCPT TO:.@["])
def test_address_the_stdlib_parser_trips_on_is_a_syntax_error(ctx: fuzz.Context,
                                                              line: bytes) -> None:
    """Found by test_gateway_data's differential test: AttributeError inside the stdlib."""
    smtp = ctx.smtp()
    smtp.send(line + b"\r\n")
    code, text = smtp.getreply()
    assert code in (501, 503, 553) and not text.startswith(b"4.3.0"), (code, text)
    assert smtp.noop()[0] == 250
    ctx.drop_smtp()


def test_starttls_inside_tls_is_refused(ctx: fuzz.Context) -> None:
    smtp = ctx.smtp()
    smtp.send(b"STARTTLS\r\n")
    code, text = smtp.getreply()
    assert code == 503, (code, text)  # RFC 3207 §4.2: no second STARTTLS
    assert smtp.noop()[0] == 250  # still the same TLS session
    ctx.drop_smtp()


@pytest.mark.parametrize("header", [b"Content-Type: \x1e\xc2\x80",  # unicode line boundary
                                    b"Content-Type: ;\xc2\x80"])  # non-ASCII parameter
def test_unsignable_header_is_a_clear_refusal(ctx: fuzz.Context, header: bytes) -> None:
    from certs import smime
    from certs.errors import MalformedSmime

    with ctx.operator.space.db.transaction() as session:
        issued = ctx.operator.space.pki.issue_mailbox(session, f"h{len(header)}@mss.test", "H")
    with pytest.raises(MalformedSmime, match="En-tête MIME invalide"):
        smime.sign(header + b"\r\n\r\n", issued.certificate,
                   issued.private_key)  # type: ignore[arg-type]
