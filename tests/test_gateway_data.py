"""The gateway's fast paths in aiosmtpd's parsing, each against what it replaces: the block
reader of SMTP DATA (``gateway.smtp.data``) against line-by-line reading (aiosmtpd's, written out
below as the reference) on a real asyncio stream fed in pieces; the direct reading of
``<local@domain>`` paths against aiosmtpd's RFC 5322 parser."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.data import Body, Outcome, read_body
from gateway.smtp.protocol import GatewaySmtp

LINE_LIMIT = 40


def reference(stream: bytes, size_limit: int | None, line_limit: int) -> tuple[Body, bytes]:
    """aiosmtpd 1.4's smtp_DATA loop: (the body, what stays in the stream). One deliberate
    difference: a body over the size limit is answered 552 even if a long line came first."""
    lines, size, state, pos = [], 0, Outcome.OK, 0
    while True:
        end = stream.find(b"\r\n", pos)
        line = stream[pos:end + 2]
        pos = end + 2
        if line == b".\r\n":
            break
        size += len(line)
        if state is Outcome.OK and size_limit and size > size_limit:
            state = Outcome.TOO_MUCH
        if state is Outcome.OK and len(line) > line_limit:
            state = Outcome.TOO_LONG
        lines.append(line[1:] if line.startswith(b".") else line)
    if size_limit and size > size_limit:
        state = Outcome.TOO_MUCH
    if state is not Outcome.OK:
        return Body(state, b""), stream[pos:]
    return Body(Outcome.OK, b"".join(lines)), stream[pos:]


async def run(stream: bytes, pieces: list[int], size_limit: int | None,
              limit: int) -> tuple[Body, bytes]:
    reader = asyncio.StreamReader(limit=limit)
    cuts = sorted({min(max(p, 0), len(stream)) for p in pieces} | {0, len(stream)})

    async def feed() -> None:
        for start, end in zip(cuts, cuts[1:], strict=False):
            reader.feed_data(stream[start:end])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    body = await read_body(reader, size_limit=size_limit, line_limit=LINE_LIMIT)
    await feeder
    return body, await reader.read()


lines = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"fin.", b"a.b", b"x" * 30,
                                  b"y" * 45, b"\r", b"\n", b"mot\rmot", b"\xc3\xa9t\xc3\xa9"]),
                 max_size=30)


@settings(max_examples=400, deadline=None)
@given(lines=lines, pieces=st.lists(st.integers(0, 2000), max_size=12),
       size_limit=st.sampled_from([None, 50, 200, 10_000]),
       limit=st.sampled_from([8, 64, 1001]), after=st.sampled_from([b"", b"QUIT\r\n",
                                                                     b"RSET\r\nNOOP\r\n"]))
def test_blocks_read_as_lines_would(lines: list[bytes], pieces: list[int],
                                    size_limit: int | None, limit: int, after: bytes) -> None:
    """Same body, same refusal, same bytes left for the next command, whatever the chunking
    and the stream's limit (small limits force the reader's LimitOverrun path)."""
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + after
    assert asyncio.run(run(stream, pieces, size_limit, limit)) == \
        reference(stream, size_limit, LINE_LIMIT)


@pytest.mark.parametrize(("stream", "content"), [
    (b".\r\n", b""),
    (b"..\r\n.\r\n", b".\r\n"),
    (b"Fin.\r\n.\r\n", b"Fin.\r\n"),
    (b"a\r\n..\r\n...\r\nb.\r\n.\r\n", b"a\r\n.\r\n..\r\nb.\r\n"),
    (b"a\r\n.\r\n.\r\n", b"a\r\n"),  # the first lone dot ends it; the second is left
])
def test_dots(stream: bytes, content: bytes) -> None:
    body, _ = asyncio.run(run(stream, [1, 2, 3, 5], None, 1001))
    assert body == Body(Outcome.OK, content)


def test_client_leaving_mid_body_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(run(b"Objet: partiel\r\nsans fin", [4], None, 1001))


def test_too_much_is_not_kept() -> None:
    body, rest = asyncio.run(run(b"z" * 30 + b"\r\n" + b"y" * 30 + b"\r\n.\r\nQUIT\r\n",
                                 [10, 20, 40], 40, 1001))
    assert body == Body(Outcome.TOO_MUCH, b"") and rest == b"QUIT\r\n"


# ---------------------------------------------------------------------- MAIL/RCPT paths
path_parts = st.lists(st.sampled_from(["<", ">", "@", ".", "a", "Z", "0", "-", "+", "_", "'",
                                       '"', " ", "\t", "(", ")", "[", "]", ":", ",", "é",
                                       "mss", "test", "SIZE=10", "BODY=8BITMIME"]),
                      max_size=20).map("".join)


@settings(max_examples=600, deadline=None)
@given(arg=st.one_of(path_parts, st.builds("<{}@{}>{}".format, path_parts, path_parts,
                                           path_parts)))
def test_simple_paths_read_as_the_stdlib_parser_reads_them(arg: str) -> None:
    async def both() -> tuple[object, object]:
        ours, theirs = GatewaySmtp(object()), SMTP(object())
        try:
            expected: object = theirs._getaddr(arg)
        except Exception:  # noqa: BLE001 — the stdlib parser's own bugs: ours says None
            expected = (None, None)
        return ours._getaddr(arg), expected

    ours, expected = asyncio.run(both())
    assert ours == expected
