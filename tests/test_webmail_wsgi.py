"""The webmail's WSGI responses are closed even when cheroot drops them mid-way
(``webmail.service.closing_responses``): a browser leaving a page while a script loads made
cheroot skip ``close()``, leaking the static file's handle (a ResourceWarning in CI)."""

from __future__ import annotations

from collections.abc import Iterator

from webmail.service import closing_responses


class Body:
    """A WSGI response that records its ``close()``, like werkzeug's file wrapper."""

    def __init__(self) -> None:
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"premier"
        yield b"second"

    def close(self) -> None:
        self.closed += 1


def test_a_response_dropped_after_one_chunk_is_closed() -> None:
    body = Body()
    response = closing_responses(lambda environ, start: body)({}, None)
    assert next(response) == b"premier"  # cheroot writes it, then the socket fails
    del response  # cheroot's finally raised before close(): the response is dropped
    assert body.closed == 1


def test_a_response_read_whole_is_closed_once() -> None:
    body = Body()
    response = closing_responses(lambda environ, start: body)({}, None)
    assert b"".join(response) == b"premiersecond"
    getattr(response, "close", lambda: None)()  # cheroot's own close() of the generator
    assert body.closed == 1


def test_a_response_without_close_is_served() -> None:
    response = closing_responses(lambda environ, start: [b"a", b"b"])({}, None)
    assert list(response) == [b"a", b"b"]
