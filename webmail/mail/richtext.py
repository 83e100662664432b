"""The « Mise en forme » body: the editor's HTML, cleaned by the sanitiser
(``sanitise.clean_composed``), and the plain text sent beside it (multipart/alternative,
RFC 2046 §5.1.4) derived here from that cleaned HTML — so both parts say the same thing.

The text follows the usual conventions of mail readers: a paragraph per block, ``- `` before a
list item (``1. `` in a numbered list), a link as « text <address> », the quoted original
prefixed with ``> ``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from webmail.mail.sanitise import clean_composed

HTML_MAX = 800_000  # characters of editor HTML accepted (twice the text limit: markup)
_BLOCKS = {"p", "div", "ul", "ol", "blockquote"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.quote = 0
        self.lists: list[list[int]] = []  # per open list: [is_numbered, next number]
        self.href: list[str] = []
        self.link_text: list[str] = []

    def _break(self) -> None:
        self.lines.append("")

    def _block(self) -> None:
        if self.lines[-1].strip():
            self._break()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._break()
        elif tag in _BLOCKS or tag == "li":
            self._block()
        if tag == "blockquote":
            self.quote += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 1])
        elif tag == "li":
            numbered, number = self.lists[-1] if self.lists else (False, 1)
            indent = "  " * max(len(self.lists) - 1, 0)
            self.lines[-1] += indent + (f"{number}. " if numbered else "- ")
            if self.lists:
                self.lists[-1][1] += 1
        elif tag == "a":
            self.href.append(dict(attrs).get("href") or "")
            self.link_text.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS or tag == "li":
            self._block()
        if tag == "blockquote":
            self.quote = max(self.quote - 1, 0)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        elif tag == "a" and self.href:
            href, label = self.href.pop(), self.link_text.pop().strip()
            shown = href[7:] if href.startswith("mailto:") else href
            if href and shown != label:
                self.lines[-1] += f" <{shown}>"

    def handle_data(self, data: str) -> None:
        text = re.sub(r"\s+", " ", data)
        if not self.lines[-1] and self.quote:
            self.lines[-1] = "> " * self.quote
        if not self.lines[-1].strip("> "):
            text = text.lstrip()
        self.lines[-1] += text
        if self.link_text:
            self.link_text[-1] += text


def html_to_text(html: str) -> str:
    """The plain-text alternative of cleaned editor HTML (see the module docstring)."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    # Trailing blanks go, but for the signature separator "-- " (RFC 3676 §4.3).
    lines = [line if line == "-- " else line.rstrip() for line in parser.lines]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def composed(html: str) -> tuple[str, str]:
    """(cleaned HTML, its plain text) of what the editor posted; ("", "") when nothing of it
    remains once cleaned (only markup, or only what the sanitiser removes)."""
    cleaned = clean_composed(html[:HTML_MAX])
    text = html_to_text(cleaned)
    if not text.strip():
        return "", ""
    return cleaned, text
