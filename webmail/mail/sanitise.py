"""HTML message bodies made inert with nh3 (Ammonia, a maintained allow-list sanitiser).

Three layers, so that one mistake is not enough: (1) nh3 keeps only an allow-list of
presentational tags and attributes — no script, no event handler, no ``javascript:`` or other
unknown URL scheme, no ``<style>``, ``<svg>``, ``<form>``, frames or objects, and a short list
of CSS properties without ``url()`` (no CSS expressions, no remote backgrounds); remote images
are dropped unless the reader asked to see them, and ``cid:`` images point to the message's
own parts; (2) the body is served by its own URL with a CSP that forbids every script and, by
default, every remote load; (3) it is shown in an ``<iframe sandbox>`` without
``allow-scripts``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nh3

TAGS = {"a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption",
        "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt",
        "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li",
        "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub",
        "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var"}
# Removed with their content (nh3 drops unknown tags but keeps their text).
DROPPED_WITH_CONTENT = {"script", "style", "title", "noscript", "template", "svg", "math",
                        "iframe", "object", "embed", "textarea", "select", "button", "head"}
ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align", "valign", "width", "height", "style", "class"},
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "td": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "bgcolor", "scope"},
    "tr": {"bgcolor"},
    "col": {"span"}, "colgroup": {"span"},
    "ol": {"start", "type"}, "li": {"value"},
}
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "white-space", "vertical-align", "margin", "margin-top",
    "margin-bottom", "margin-left", "margin-right", "padding", "padding-top",
    "padding-bottom", "padding-left", "padding-right", "border", "border-top",
    "border-bottom", "border-left", "border-right", "border-collapse", "border-color",
    "border-style", "border-width", "width", "height", "max-width", "display",
}
SCHEMES = {"http", "https", "mailto", "cid"}
# Anything that loads or runs something from a style attribute (old IE expressions, bindings).
_BAD_STYLE = ("url(", "expression(", "javascript:", "behavior:", "-moz-binding", "@import")


@dataclass(frozen=True)
class Clean:
    html: str
    blocked_images: int  # remote images left out


def sanitise(html: str, *, show_images: bool, cid_url: Callable[[str], str | None]) -> Clean:
    """``html`` made inert (see the module docstring). ``cid_url`` maps a Content-ID to the
    absolute URL of that part of the same message (None: unknown, the image is dropped)."""
    blocked = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal blocked
        if name == "class":
            return None  # our stylesheet's classes are not the sender's to use
        if name == "style" and any(bad in value.lower().replace(" ", "")
                                   for bad in _BAD_STYLE):
            return None
        if tag == "img" and name == "src":
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                return cid_url(value.strip()[4:].strip("<>"))
            if lowered.startswith(("http:", "https:")) and not show_images:
                blocked += 1
                return None
        return value

    cleaned = nh3.clean(
        html, tags=TAGS, clean_content_tags=DROPPED_WITH_CONTENT, attributes=ATTRIBUTES,
        attribute_filter=attribute, url_schemes=SCHEMES, strip_comments=True,
        link_rel="noopener noreferrer nofollow", filter_style_properties=STYLE_PROPERTIES,
        url_relative="deny",  # nothing resolves against the webmail's own URLs
        set_tag_attribute_values={"a": {"target": "_blank"}})
    return Clean(cleaned, blocked)


def frame_csp(show_images: bool) -> str:
    """The CSP of a body served in its frame: no script at all; images from the webmail
    itself (``cid:`` parts), and remote ones only when asked."""
    images = "'self' https: http:" if show_images else "'self'"
    return (f"default-src 'none'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; font-src 'none'; connect-src 'none'; media-src 'none'; "
            "object-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'; "
            "frame-ancestors 'self'")


# What the compose page's editor writes (bold, italic, underline, lists, links, paragraphs,
# the quoted original): a narrower list than what is read, with no attribute but a link's
# address — no style, no class, no image. Whatever else a paste or a forged POST carries is
# dropped (its text kept), scripts and styles with their content.
COMPOSED_TAGS = {"p", "div", "br", "b", "strong", "i", "em", "u", "ul", "ol", "li", "a",
                 "blockquote"}
COMPOSED_SCHEMES = {"http", "https", "mailto"}


def clean_composed(html: str) -> str:
    """HTML written in the compose page's editor, made safe to send (see above)."""
    return nh3.clean(
        html, tags=COMPOSED_TAGS, clean_content_tags=DROPPED_WITH_CONTENT,
        attributes={"a": {"href"}}, url_schemes=COMPOSED_SCHEMES, strip_comments=True,
        link_rel="noopener noreferrer", url_relative="deny")
