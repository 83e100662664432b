"""Which attachments the browser may show inline (an image in the page, a PDF in Chromium's
viewer), judged on their bytes, never on what the message claims.

An attachment is shown only when three things agree: the bytes' signature (magic number), the
declared ``Content-Type`` (or, for ``application/octet-stream``, the file name's extension)
and the extension when there is one. A JPEG named ``.pdf``, a PNG declared ``text/html``, an
SVG under any name (an SVG is a document that can carry script) are never shown: they are
downloads (``attachments.download``). The inline response then carries the type the bytes
proved, never the declared one.

A PDF is shown only when it asks for no active content: Chromium's viewer (PDFium) runs the
JavaScript of a PDF (``app.alert``, ``app.response`` — a prompt a PDF could dress as a log-in
box), so a PDF naming ``/JS``, ``/JavaScript``, ``/Launch``, ``/SubmitForm``, ``/ImportData``,
``/RichMedia`` or ``/XFA`` — in its body or in a compressed object stream (PDF 1.5 §3.4.6),
names decoded (``/J#53`` is ``/JS``, PDF 1.7 §7.3.5) — or with an object stream this module
cannot read (another filter, past the inflate budget, encrypted) is a download only.
"""

from __future__ import annotations

import re
import zlib

PDF = "application/pdf"
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_EXTENSIONS = {"pdf": PDF, "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
               "jpe": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg",
            "application/x-pdf": PDF}
_UNTYPED = ("application/octet-stream", "binary/octet-stream", "application/unknown", "")
ACTIVE = {b"JS", b"JavaScript", b"Launch", b"SubmitForm", b"ImportData", b"RichMedia", b"XFA"}
INFLATE_BUDGET = 32 * 1024 * 1024  # bytes of object streams inflated per PDF, at most
_NAME = re.compile(rb"/([^\x00\t\n\f\r ()<>\[\]{}/%]+)")
_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_OBJ = re.compile(rb"\d+\s+\d+\s+obj\b")


def sniff(data: bytes) -> str | None:
    """The type the first bytes prove (among the kinds shown inline), else None."""
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def declared(content_type: str, filename: str) -> str | None:
    """The inline kind the message claims for a part, None when it claims none or its type
    and its name's extension disagree."""
    ctype = content_type.strip().lower()
    ctype = _ALIASES.get(ctype, ctype)
    stem, dot, ext = filename.strip().rpartition(".")
    by_name = _EXTENSIONS.get(ext.lower()) if dot and stem else None
    if ctype in _UNTYPED:
        return by_name
    if ctype not in (PDF, *IMAGES):
        return None
    if dot and stem and by_name != ctype:
        return None  # "photo.pdf" declared image/jpeg, "cr.svg" declared image/png…
    return ctype


def inline_type(content_type: str, filename: str, data: bytes) -> str | None:
    """The ``Content-Type`` to show ``data`` inline with, None when it must be a download
    (module docstring)."""
    return judge(content_type, filename, data)[0]


def judge(content_type: str, filename: str, data: bytes) -> tuple[str | None, str | None]:
    """(type shown inline, None) or (None, why a file that claims to be an image, a PDF or
    an SVG is not shown — a French sentence for its reader; None for other files)."""
    ctype = content_type.strip().lower()
    if ctype == "image/svg+xml" or filename.lower().endswith((".svg", ".svgz")):
        return None, ("Image SVG : jamais affichée dans la page (elle peut contenir un "
                      "programme), seulement à télécharger.")
    claimed = declared(content_type, filename)
    if claimed is None:
        named = _EXTENSIONS.get(filename.rpartition(".")[2].lower()) if "." in filename \
            else None
        if named or _ALIASES.get(ctype, ctype) in (PDF, *IMAGES):
            return None, "Pas d’aperçu : le nom et le type annoncé du fichier ne concordent pas."
        return None, None
    if sniff(data) != claimed:
        return None, "Pas d’aperçu : le contenu du fichier n’est pas celui qu’il annonce."
    if claimed == PDF and pdf_active(data):
        return None, ("Pas d’aperçu : ce PDF contient du JavaScript ou des actions "
                      "automatiques. Téléchargez-le pour l’ouvrir avec un lecteur de confiance.")
    return claimed, None


def _names(data: bytes) -> set[bytes]:
    return {_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), n)
            for n in _NAME.findall(data)}


def pdf_active(data: bytes) -> bool:
    """Whether a PDF names active content, or hides its objects where this cannot look."""
    outside: list[bytes] = []
    budget = INFLATE_BUDGET
    position = 0
    for found in _STREAM.finditer(data):
        if found.start() < position:
            continue  # "stream" inside a stream already skipped
        starts = [m.end() for m in _OBJ.finditer(data, position, found.start())]
        head = data[starts[-1] if starts else position:found.start()]
        body_end = data.find(b"endstream", found.end())
        body_end = len(data) if body_end < 0 else body_end
        outside.append(data[position:found.start()])
        names = _names(head)
        if b"ObjStm" in names:
            inner = _inflate(head, names, data[found.end():body_end], budget)
            if inner is None:
                return True
            budget -= len(inner)
            outside.append(inner)
        position = body_end + len(b"endstream")
    outside.append(data[position:])
    return any(_names(chunk) & ACTIVE for chunk in outside)


def _inflate(head: bytes, names: set[bytes], body: bytes, budget: int) -> bytes | None:
    """An object stream's content: plain, or one FlateDecode; None otherwise or past the
    budget (decode parameters such as predictors are refused too)."""
    filters = names & {b"FlateDecode", b"Fl", b"LZWDecode", b"ASCII85Decode",
                       b"ASCIIHexDecode", b"RunLengthDecode", b"Crypt", b"DecodeParms"}
    if not filters:
        return body
    if filters not in ({b"FlateDecode"}, {b"Fl"}) or head.count(b"Decode") > 1:
        return None
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(body, budget + 1)
    except zlib.error:
        return None
    return None if len(inner) > budget or inflater.unconsumed_tail else inner
