"""Attachments leave the webmail as downloads: a safe file name (no path, no control or quoting
character) in ``Content-Disposition: attachment`` (RFC 6266, with the UTF-8 name in
``filename*``, RFC 8187), a sandboxing CSP, ``nosniff``. The only exception is a PDF or an
image whose bytes prove what it claims (``preview``), shown ``inline`` in a sandbox.

An ``IHE_XDM.zip`` (IHE ITI TF-1 §16, XDM "media" exchange, used by MSSanté for structured
documents) is opened to list the documents it carries, with their titles when its
``METADATA.XML`` names them. The archive is only read: member count and sizes are bounded,
nothing is extracted to disk, and XML with a DOCTYPE is not parsed (entity expansion).
"""

from __future__ import annotations

import io
import re
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from urllib.parse import quote

from flask import Response

MAX_MEMBERS = 2000
MAX_MEMBER_SIZE = 50 * 1024 * 1024
# What a browser may keep as the download's type; anything else is application/octet-stream.
_KEEP_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain",
               "application/zip", "application/xml", "text/xml", "message/rfc822"}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


def safe_filename(name: str, fallback: str = "piece-jointe.bin") -> str:
    """A file name safe on every OS: last path component, no control or reserved characters,
    no leading dot, at most 150 characters (extension kept)."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .") or fallback
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:140] + dot + ext[:9]) if dot and len(ext) < 10 else name[:150]
    return name


def download(data: bytes, filename: str, content_type: str) -> Response:
    """The download response (see the module docstring)."""
    name = safe_filename(filename)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    response = Response(data, mimetype=content_type if content_type in _KEEP_TYPES
                        else "application/octet-stream")
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}")
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# An attachment shown in the page (``preview``): its own document is sandboxed (an opaque
# origin that runs no script of ours), loads nothing, and only our pages may frame it.
INLINE_CSP = ("sandbox; default-src 'none'; img-src 'self' data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'self'")


def inline(data: bytes, filename: str, content_type: str) -> Response:
    """An attachment shown by the browser: ``content_type`` is the one its bytes proved
    (``preview.inline_type``), never the declared one; ``Content-Disposition: inline`` with
    the same safe name as a download; sandboxed (``INLINE_CSP``), ``nosniff``."""
    name = safe_filename(filename)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    response = Response(data, mimetype=content_type)
    response.headers["Content-Disposition"] = (
        f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}")
    response.headers["Content-Security-Policy"] = INLINE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


@dataclass(frozen=True)
class XdmDocument:
    index: int  # member number in the archive
    path: str
    size: int
    title: str
    mime_type: str


def xdm_documents(data: bytes) -> list[XdmDocument]:
    """The documents of an XDM package (every file except the metadata and the index),
    empty when the archive cannot be read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()[:MAX_MEMBERS]
    except (zipfile.BadZipFile, OSError, ValueError):
        return []
    titles = _titles(archive, members)
    docs = []
    for index, info in enumerate(members):
        base = info.filename.rsplit("/", 1)[-1]
        if info.is_dir() or base.upper() in ("METADATA.XML", "INDEX.HTM", "README.TXT"):
            continue
        title, mime = titles.get(base, ("", ""))
        docs.append(XdmDocument(index, info.filename, info.file_size, title, mime))
    return docs


def xdm_member(data: bytes, index: int) -> tuple[str, bytes] | None:
    """(file name, content) of member ``index``, None if absent or too large."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()[:MAX_MEMBERS]
        if not 0 <= index < len(members) or members[index].is_dir():
            return None
        info = members[index]
        if info.file_size > MAX_MEMBER_SIZE:
            return None
        with archive.open(info) as fh:
            content = fh.read(MAX_MEMBER_SIZE + 1)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return None
    return (info.filename, content) if len(content) <= MAX_MEMBER_SIZE else None


def _titles(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]
            ) -> dict[str, tuple[str, str]]:
    """File name → (title, MIME type) from the ebRIM ``ExtrinsicObject`` entries of every
    ``METADATA.XML`` (slot ``URI`` names the file)."""
    found: dict[str, tuple[str, str]] = {}
    for info in members:
        if info.filename.rsplit("/", 1)[-1].upper() != "METADATA.XML" or \
                info.file_size > 5 * 1024 * 1024:
            continue
        xml = archive.read(info)
        if b"<!DOCTYPE" in xml.upper() or b"<!ENTITY" in xml.upper():
            continue
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            continue
        for entry in root.iter():
            if entry.tag.rsplit("}", 1)[-1] == "ExtrinsicObject":
                uri, title = _entry(entry)
                if uri:
                    found[uri.rsplit("/", 1)[-1]] = (title, entry.get("mimeType", ""))
    return found


def _entry(entry: ET.Element) -> tuple[str, str]:
    uri, title = "", ""
    for child in entry.iter():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "Slot" and child.get("name") == "URI":
            uri = "".join(v.text or "" for v in child.iter() if v.tag.endswith("Value"))
        elif tag == "Name" and not title:
            title = next((s.get("value", "") for s in child.iter()
                          if s.tag.endswith("LocalizedString")), "")
    return uri.strip(), title.strip()
