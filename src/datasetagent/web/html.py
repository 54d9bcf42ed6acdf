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


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, hides its content)

    @property
    def hidden(self) -> bool:
        return any(hides for _, hides in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")
        if tag in _VOID:
            return
        style = next((v for k, v in attrs if k == "style" and v), "")
        hides = tag in _INVISIBLE or bool(_HIDDEN_STYLE.search(style))
        self.stack.append((tag, hides))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BREAKS:
            self.parts.append(" ")
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:  # close it and whatever was left open inside
                del self.stack[depth:]
                break

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def to_text(html: str | None, *, limit: int | None = None) -> str:
    """The text a reader of ``html`` sees, on one line; ``""`` for None or no text.

    ``limit`` cuts the result to that many characters (ending with ``…``)."""
    if not html:
        return ""
    parser = _Text()
    parser.feed(html)
    parser.close()
    text = " ".join("".join(parser.parts).split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text
