"""Attribution files of every export, written as samples stream past.

* ``ATTRIBUTION.md``: one row per image: its file in the export, its title (linked to the page
  it is shown on, where there is one), its creator, its licence (linked to the licence's text),
  where it came from (the file, or the URL fetched) and what processing changed.
* ``LICENSES.md``: each licence in the export, where its text lives, what it asks of users,
  and how many images carry it.

What sources say (titles, creators, URLs) is text from the web: every cell is escaped
(``md_text``) so that no ``|``, newline, bracket or HTML in it can break the table, add a link
or inject markup, and only http(s) URLs become links (``md_link``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import IO
from urllib.parse import quote

from datasetagent import licences
from datasetagent.records import Sample

#: What Markdown (CommonMark and GitHub's tables) reads as markup inside a table cell: cell
#: ends, links, HTML and autolinks, code spans, emphasis and strike-through (``_`` only
#: emphasises between words, which leaves file names and URLs readable as they are).
_MARKUP = re.compile(r"([\\`*\[\]<>|~])")
#: Line breaks and other control characters, which would end a row or hide text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
#: Bidirectional formatting characters, which show the text around them reordered.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: A character reference (``&#x202E;``, ``&amp;``), which a Markdown viewer decodes.
_REFERENCE = re.compile(r"&(?=#?[0-9A-Za-z]+;)")


def one_line(text: str | None) -> str:
    """``text`` as one line that shows as it reads: line breaks and control characters made
    spaces, bidirectional formatting characters removed (escape it for where it goes)."""
    return _BIDI.sub("", _CONTROL.sub(" ", text or ""))


def md_text(text: str | None) -> str:
    """``text`` as plain text in a Markdown table cell: markup characters and character
    references escaped, line breaks and control characters made spaces, bidirectional
    formatting characters removed."""
    return _REFERENCE.sub(r"\\&", _MARKUP.sub(r"\\\1", one_line(text))).strip()


def md_link(text: str | None, url: str | None) -> str:
    """``text`` (or the URL itself) linked to ``url`` where that is an http(s) URL; plain text
    otherwise. The URL is percent-encoded where Markdown would read a character as markup."""
    shown = md_text(text or url)
    href = http_url(url)
    return shown if href is None else f"[{shown or href}]({href})"


def http_url(url: str | None) -> str | None:
    """``url`` fit to link to where it is an http(s) URL with a host (control characters
    dropped, characters Markdown or HTML would read as markup percent-encoded); else None."""
    if not url or not re.match(r"https?://[^\s/?#]", url, re.IGNORECASE):
        return None
    return quote(_CONTROL.sub("", url), safe="/:?#@!$&*+,;=%-._~")


def licence_link(licence: str, url: str | None = None) -> str:
    """The licence's name linked to ``url`` (the one its source gave) or its canonical deed."""
    return md_link(licence, url or licences.licence_url(licence))


def licence_terms(licence: str) -> str:
    """What a licence (``licences.normalise``'s identifier) asks of whoever uses the images,
    in a few words."""
    if licence == licences.USER_SUPPLIED:
        return (
            "supplied by the user (their own files, or a URL list naming no licence); terms as "
            "the user holds them"
        )
    if licence == licences.UNKNOWN:
        return "not recognised: check the terms on each image's page before using it"
    found = licences.terms(licence)
    if found is None:
        return "see the licence text"
    if not found.attribution:
        return "public domain: no conditions"
    asks = ["credit the creator and link the source and licence"]
    if found.non_commercial:
        asks.append("no commercial use")
    if found.share_alike:
        asks.append("share adaptations under the same licence")
    if found.no_derivatives:
        asks.append("no adaptations")
    return "; ".join(asks)


class AttributionWriter:
    """Streams ``ATTRIBUTION.md`` row by row; ``close()`` adds ``LICENSES.md``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.counts: Counter[str] = Counter()
        #: The first licence URL an image gave for each licence without a canonical deed.
        self.urls: dict[str, str] = {}
        self._file: IO[str] | None = None

    def __enter__(self) -> AttributionWriter:
        self._file = (self.out / "ATTRIBUTION.md").open("w", encoding="utf-8")
        self._file.write(
            "# Attribution\n\nEvery image of this dataset, where it came from, who made it and "
            "under which licence (see `LICENSES.md` for what each licence asks). A title links "
            "to the page the image is shown on, a licence to its text.\n\n"
            "| file | title | creator | licence | source | changes |\n"
            "|---|---|---|---|---|---|\n"
        )
        return self

    def add(self, sample: Sample, file: str) -> None:
        if self._file is None:
            raise RuntimeError("AttributionWriter used outside its with-block")
        prov = sample.provenance
        self.counts[prov.licence] += 1
        if prov.licence_url and licences.licence_url(prov.licence) is None:
            self.urls.setdefault(prov.licence, prov.licence_url)
        steps = ", ".join(step.name for step in prov.steps) or "none"
        cells = (
            md_text(file),
            md_link(prov.title, prov.page),
            md_text(prov.creator) or "unknown",
            licence_link(prov.licence, prov.licence_url),
            md_link(prov.location, prov.location),
            md_text(steps),
        )
        self._file.write("| " + " | ".join(cells) + " |\n")

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if exc and exc[0] is not None:
            return
        lines = [
            "# Licences",
            "",
            "The licences of this dataset's images. Each image's own licence, creator and source "
            "are in `ATTRIBUTION.md` and `manifest.jsonl`.",
            "",
            "| licence | images | text | conditions |",
            "|---|---|---|---|",
        ]
        for name, n in sorted(self.counts.items()):
            url = licences.licence_url(name) or self.urls.get(name)
            text, terms = md_text(url), md_text(licence_terms(name))
            lines.append(f"| {md_text(name)} | {n} | {text} | {terms} |")
        (self.out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
