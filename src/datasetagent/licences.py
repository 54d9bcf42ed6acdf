"""Licence names as sources write them, normalised, and what each one permits.

Sources name licences in many ways: Openverse as a code and a version (``by-sa`` + ``4.0``),
Wikimedia Commons as a short name (``CC BY-SA 4.0``, ``Public domain``), URL lists as whatever
their author wrote, and licence URLs (``creativecommons.org/licenses/by/2.0/``). ``normalise``
turns each into one identifier (``CC-BY-SA-4.0``, ``CC0-1.0``, ``PDM``); what it does not
recognise is ``unknown``. ``terms`` says what an identifier permits, for the spec's policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Licence recorded for files the user supplies from their own disk.
USER_SUPPLIED = "user-supplied"
#: What a licence no rule recognises is recorded as.
UNKNOWN = "unknown"
#: Public Domain Mark: no known copyright.
PDM = "PDM"
CC0 = "CC0-1.0"

#: Creative Commons licence codes, in the order of their elements.
_CC_CODES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
_VERSION = re.compile(r"(\d(?:\.\d)?)")
_CC_URL = re.compile(
    r"creativecommons\.org/licen[cs]es/([a-z-]+)/(\d(?:\.\d)?)(?:/([a-z]{2,3})(?=/|$))?",
    re.IGNORECASE,
)
#: Words of long licence names (``Attribution-Share Alike``, ``NonCommercial``) and the codes
#: they stand for, and words that add nothing to a short name (``International``, ``migrated``).
_WORDS = (
    (re.compile(r"share[\s-]?alike"), "sa"),
    (re.compile(r"non[\s-]?commercial"), "nc"),
    (re.compile(r"no[\s-]?deriv(?:ative)?s?|no[\s-]?derivative[\s-]works"), "nd"),
    (re.compile(r"\b(?:international|generic|unported|migrated|license|licence)\b"), ""),
)
_CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/", re.IGNORECASE)
_PDM_URL = re.compile(r"creativecommons\.org/publicdomain/mark/", re.IGNORECASE)


@dataclass(frozen=True)
class Terms:
    """What a licence asks of the user of an image."""

    attribution: bool
    share_alike: bool
    non_commercial: bool
    no_derivatives: bool


def normalise(name: str | None, version: str | None = None, url: str | None = None) -> str:
    """One identifier for a licence named by ``name`` (a code such as ``by-sa``, a short name
    such as ``CC BY-SA 4.0``, ``cc0``, ``Public domain``), its ``version`` where given apart,
    and its ``url`` where the name says too little. ``unknown`` when none of them is clear."""
    text = " ".join((name or "").split()).lower()
    text = text.replace("creative commons", "cc").replace("attribution", "by")
    for pattern, code_word in _WORDS:
        text = pattern.sub(code_word, text)
    text = " ".join(text.split())
    if text in ("", "none", "null"):
        text = ""
    if text in ("cc0", "cc-0", "cc zero", "cc-zero", "cc0 1.0", "cc0-1.0", "cc0 1.0 universal"):
        return CC0
    if text in ("pdm", "pdm-1.0", "public domain", "public domain mark", "pd", "publicdomain"):
        return PDM
    if text.startswith(("public domain", "pd-")) or text in ("cc-pd", "cc pdm 1.0", "cc pdm"):
        return PDM
    code = text.removeprefix("cc").strip(" -_")
    # several versions at once (Commons' ``CC BY-SA 3.0,2.5,2.0,1.0``): the first one names it
    code = re.sub(r"(\d\.\d)(?:\s*[,/-]\s*\d\.\d)+", r"\1", code)
    found = _VERSION.search(code)
    number = found.group(1) if found else (version or "").strip()
    if not found and number and not re.fullmatch(r"\d(?:\.\d)?", number):
        return UNKNOWN  # a version field that is no version ("nc", "4.0 NC"): not guessed
    code = _VERSION.sub("", code).replace("_", "-").replace(" ", "-").strip("-")
    code = re.sub(r"-+", "-", code)
    ported = ""  # a licence ported to one jurisdiction: ``CC BY-SA 3.0 DE``
    if (
        found
        and code not in _CC_CODES
        and (m := re.fullmatch(r"([a-z-]+)-([a-z]{2,3})", code))
        and m.group(1) in _CC_CODES
    ):
        code, ported = m.group(1), "-" + m.group(2).upper()
    if code in _CC_CODES and (text.startswith("cc") or name in _CC_CODES or version):
        return _cc(code, number or _url_version(url)) + ported
    if url:
        if _CC0_URL.search(url):
            return CC0
        if _PDM_URL.search(url):
            return PDM
        match = _CC_URL.search(url)
        if match and match.group(1).lower() in _CC_CODES:
            ported = f"-{match.group(3).upper()}" if match.group(3) else ""
            return _cc(match.group(1).lower(), match.group(2)) + ported
    return UNKNOWN


def _url_version(url: str | None) -> str:
    match = _CC_URL.search(url or "")
    return match.group(2) if match else ""


def _cc(code: str, number: str) -> str:
    if number and "." not in number:
        number += ".0"
    return "CC-" + code.upper() + (f"-{number}" if number else "")


def terms(licence: str) -> Terms | None:
    """What ``licence`` (an identifier from ``normalise``) asks; None for ``unknown`` and for
    identifiers this module does not know (such as ``user-supplied``)."""
    if licence in (CC0, PDM):
        return Terms(False, False, False, False)
    match = re.fullmatch(r"CC-(BY(?:-NC)?(?:-SA|-ND)?)(?:-\d\.\d(?:-[A-Z]{2,3})?)?", licence)
    if match is None:
        return None
    parts = match.group(1).split("-")
    return Terms(True, "SA" in parts, "NC" in parts, "ND" in parts)


def licence_url(licence: str) -> str | None:
    """The canonical deed of a Creative Commons or public-domain identifier, if it has one."""
    if licence == CC0:
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    if licence == PDM:
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    match = re.fullmatch(r"CC-([A-Z-]+?)-(\d\.\d)(?:-([A-Z]{2,3}))?", licence)
    if match is None:
        return None
    port = f"{match.group(3).lower()}/" if match.group(3) else ""
    return f"https://creativecommons.org/licenses/{match.group(1).lower()}/{match.group(2)}/{port}"
