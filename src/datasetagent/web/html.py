"""HTML fragments as plain text, for metadata that web APIs hand out as HTML.

Wikimedia Commons gives a file's author, credit line, licence and description as HTML
(``<a href="//commons.wikimedia.org/wiki/User:Ana">Ana</a> &amp; Bo``). We record them as plain
text: tags removed (a link's text kept), entities decoded, whitespace collapsed, and the
content of ``script``/``style`` elements and of elements hidden with ``display:none`` left out.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

#: Elements whose content is never text a reader sees.
_INVISIBLE = frozenset({"script", "style", "template", "noscript", "head", "title"})
#: Elements that separate words (a line break, a paragraph, a table cell).
_BREAKS = frozenset(
    {
        "br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "dd", "dt", "dl",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "blockquote", "section", "article",
    }
)  # fmt: skip
#: Elements without an end tag (never on the open-element stack).
_VOID = frozenset(
    {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
#: Characters of a fragment read at most: metadata is a few lines, and Python's HTMLParser
#: takes quadratic time on some malformed input, so a web API's 20 MB "title" is cut first.
MAX_HTML = 20_000


class _Text(HTMLParser):
    """Collects the visible text. Linear in the input however deep or unbalanced its tags:
    what is open is counted per tag, so an end tag that closes nothing costs nothing, and one
    that closes costs the elements it pops (a web API's "title" of 100,000 unclosed ``<b>``
    must not take hours)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, hides its content)
        self.open: dict[str, int] = {}  # elements on the stack, per tag
        self.hiding = 0  # elements on the stack that hide their content

    @property
    def hidden(self) -> bool:
        return self.hiding > 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")
        if tag in _VOID:
            return
        style = next((v for k, v in attrs if k == "style" and v), "")
        hides = tag in _INVISIBLE or bool(_HIDDEN_STYLE.search(style))
        self.stack.append((tag, hides))
        self.open[tag] = self.open.get(tag, 0) + 1
        self.hiding += hides

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")
        if not self.open.get(tag):
            return
        while self.stack:  # close it and whatever was left open inside
            name, hides = self.stack.pop()
            self.open[name] -= 1
            self.hiding -= hides
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def to_text(html: str | None, *, limit: int | None = None) -> str:
    """The text a reader of ``html`` sees, on one line; ``""`` for None or no text.

    ``limit`` cuts the result to that many characters (ending with ``…``). Only the first
    ``MAX_HTML`` characters are read."""
    if not html:
        return ""
    source = html[:MAX_HTML]
    # A "<" after the last ">" opens no tag; HTMLParser would rescan the rest at each of them
    # (quadratic time), so they are given as the text they are.
    end = source.rfind(">") + 1
    source = source[:end] + source[end:].replace("<", "&lt;")
    parser = _Text()
    parser.feed(source)
    parser.close()
    text = " ".join("".join(parser.parts).split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text
