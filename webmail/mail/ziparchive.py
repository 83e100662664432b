"""« Tout télécharger »: a message's attachments as one ZIP archive, written while it is sent.

Names: each is ``attachments.safe_filename`` of the part's name — one path component, no
separator (``/`` or ``\\``), no drive, control or reserved character, no leading dot — so an
archive member can never point outside the folder it is extracted to (Zip Slip: ``../../x``
becomes ``x``), whatever the extracting program. Equal names (compared without case, as
Windows and macOS do) are made unique: ``cr.pdf``, ``cr (2).pdf``. Every name outside ASCII
carries the UTF-8 flag (APPNOTE 6.3.x §4.4.4, general purpose bit 11; ``zipfile`` sets it),
so accents survive on every system; an ASCII name reads the same in UTF-8 and in CP 437.

The archive is streamed: ``zipfile`` writes to a sink that is emptied after each chunk, with
data descriptors after each member (the sink cannot seek back). What goes in is bounded by
the caller (``total`` against the configured maximum) before the first byte is sent.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from webmail.mail.attachments import safe_filename

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = 256 * 1024


def unique_names(names: Iterable[str]) -> list[str]:
    """Safe names (module docstring), made unique without regard to case."""
    taken: set[str] = set()
    found = []
    for name in names:
        base = safe_filename(name)
        stem, dot, ext = base.rpartition(".")
        if not (dot and stem):
            stem, dot, ext = base, "", ""
        candidate, number = base, 2
        while candidate.casefold() in taken:
            candidate = f"{stem} ({number}){dot}{ext}"
            number += 1
        taken.add(candidate.casefold())
        found.append(candidate)
    return found


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream(files: Sequence[tuple[str, bytes]], when: datetime) -> Iterator[bytes]:
    """The ZIP archive of ``files`` — (name, content) — in chunks; names made safe and
    unique here, each member dated ``when`` (local time, as ZIP keeps it)."""
    names = unique_names(name for name, _ in files)
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, (_, data) in zip(names, files, strict=True):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16  # a plain file, readable
            # Deflated even when already compressed: a stored member followed by a data
            # descriptor is what streaming readers (libarchive, Java) cannot read.
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                for start in range(0, len(data), CHUNK):
                    member.write(data[start:start + CHUNK])
                    yield sink.take()
            yield sink.take()
    yield sink.take()
