"""Reading a dataset request: the phrase passes and the class names left after them.

:func:`read_request` runs a row of regular-expression passes over the lowercased text. Each pass
recognises one kind of phrase (a split, an image size, colour, counts, formats, licences, task
words), records what it means on the :class:`RequestReading` and cuts the phrase out. What is
left is split on list separators (commas, "and", "or", "vs", "/", "&") into class names, after
filler words ("a dataset of", "images", "please") are trimmed from both ends of each piece and
trailing clauses ("in the wild", "for my thesis") are dropped. When a colon is followed by a
list ("dog breeds: beagle, poodle"), the list is the classes. A name in double quotes is taken
verbatim, case included. :mod:`datasetagent.agents.demand` turns the reading into a spec.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from datasetagent.errors import SpecError
from datasetagent.spec import SPLIT_ALIASES, ColorMode, TaskKind

__all__ = [
    "EXAMPLE", "LICENCE_MODES", "SPLIT_ALIASES", "Count", "Phrase", "RequestReading", "fail",
    "read_request", "show", "word_forms",
]  # fmt: skip

EXAMPLE = "cats, dogs and horses, 200 images per class"
LICENCE_MODES = ("any", "open", "permissive")  # in order of strictness
MAX_COUNT = 100_000_000
MAX_SIDE = 100_000
MAX_NAME_WORDS = 8
_Handler: TypeAlias = Callable[[re.Match[str]], str]

# -- phrase patterns (compiled once; no other work at import) -----------------------------------
_NUM = (
    r"(?<![\w.-])(?P<neg>-?)(?P<num>[0-9]+(?:\.[0-9]+)?)"
    r"(?:\s*(?P<mult>k|thousand)\b)?(?!\w)"
)
_IMG = r"(?:images?|photos?|photographs?|pictures?|pics|samples?|examples?|shots?)"
_UNIT = r"(?:class(?:es)?|categor(?:y|ies)|labels?|kinds?|types?)"
_ADD = r"(?:\b(?P<add>add|another|extra)\s+)?"
_MORE = r"(?:(?P<more>more|extra|additional|new)\s+)?"
_SN = r"(?:train(?:ing)?|val(?:idation)?|valid|dev|test(?:ing)?)"
_SH = r"[0-9]+(?:\.[0-9]+)?\s*%?"
_SPLIT = re.compile(
    rf"(?:\b(?P<names>{_SN}(?:\s*/\s*{_SN}){{1,2}})\s*:?\s*(?:split\s*:?\s*)?)?"
    rf"(?<![\w.])(?P<a>{_SH})\s*/\s*(?P<b>{_SH})(?:\s*/\s*(?P<c>{_SH}))?(?![\w.])"
    rf"(?:\s*\(?(?P<names2>{_SN}(?:\s*/\s*{_SN}){{1,2}})\)?)?"
)
_NAMED_SPLIT = re.compile(
    rf"(?<![\w.])(?P<v>[0-9]+(?:\.[0-9]+)?)\s*%\s*(?:for\s+)?(?:the\s+)?(?P<n>{_SN})\b"
    rf"|\b(?P<n2>{_SN})(?:\s+(?:split|set))?\s*:?\s*(?P<v2>[0-9]+(?:\.[0-9]+)?)\s*%"
)
_MIN_KW = (
    r"(?:at\s+least|min(?:imum)?(?:\s+(?:side|size|resolution|dimension))?(?:\s+of)?"
    r"|no\s+(?:smaller|less)\s+than|>=|≥)\s*:?\s*"
)
_MIN_SIDE = re.compile(
    rf"(?<!\w)(?:{_MIN_KW}(?P<w>[0-9]+)\s*(?:x|×|by)\s*(?P<h>[0-9]+)(?:\s*(?:px|pixels?))?"
    rf"|(?:{_MIN_KW})?(?<![\w.])(?P<s>[0-9]+)\s*(?:px|pixels?)\b)"
)
_SIZE = re.compile(
    r"(?:\b(?:resized?|scaled?|fit(?:ted)?)\s+(?:to\s+)?)?(?<![\w.])(?P<w>[0-9]+)\s*[x×]\s*"
    r"(?P<h>[0-9]+)(?:\s*(?:px|pixels?))?(?![\w.])"
)
_GREY = re.compile(r"\b(?:gr[ae]y[\s-]*scale|black[\s-]+and[\s-]+white|b\s*&\s*w|monochrome)\b")
_COLOUR = re.compile(r"\b(?:in\s+(?:full\s+)?colou?r|full[\s-]colou?r|rgb)\b")
_PER_CLASS = tuple(
    re.compile(p)
    for p in (
        rf"{_ADD}{_NUM}\s*{_MORE}(?:{_IMG}\s+)?(?:(?:per|a)\s+{_UNIT}\b"
        rf"|(?:for\s+|of\s+|in\s+)?(?:each|every)\b(?:\s+(?:of\s+the\s+)?{_UNIT}\b)?)",
        rf"\b(?:each|every|per)\s+{_UNIT}\s*(?::|should\s+have|will\s+have|with|has|having|gets?)?"
        rf"\s*{_ADD}{_NUM}(?:\s+{_MORE}{_IMG}\b)?",
    )
)
_CLASS_COUNT = re.compile(rf"{_NUM}[\s-]*(?:different\s+|distinct\s+)?(?:class(?:es)?)\b")
_TOTALS = tuple(
    re.compile(p)
    for p in (
        rf"\b(?:in\s+)?(?:a\s+)?total\s+(?:of\s+)?{_ADD}{_NUM}(?:\s+{_MORE}{_IMG}\b)?",
        rf"{_ADD}{_NUM}\s*{_MORE}(?:{_IMG}\s+)?(?:in\s+total|total|overall|altogether|in\s+all)\b",
        rf"{_ADD}{_NUM}\s*{_MORE}{_IMG}\b(?!\s+(?:of|showing|with|containing|featuring)\b)",
        rf"\b(?P<add>add|another)\s+{_NUM}(?:\s+more)?(?=\s*(?:[,.;!?]|$))",
    )
)
_FORMAT = re.compile(
    r"\b(?:coco|yolo(?:v?[0-9]+)?|pascal[\s-]*voc|voc|image[\s-]*folders?|hugging[\s-]*face"
    r"|hf|parquet)\b"
)
_NONCOMMERCIAL = re.compile(r"\bnon[\s-]?commercial(?:\s+use)?\b")
_PERMISSIVE = re.compile(
    r"\bcommercial(?:ly)?(?:\s+(?:use|usable|usage|friendly))?\b|\bpermissive(?:ly)?"
    r"(?:\s+licen[cs]e[ds]?)?\b|\bcc0\b|\bpublic[\s-]+domain\b"
)
_OPEN = re.compile(
    r"\bopen(?:ly)?[\s-]*licen[cs]e[ds]?\b|\bcreative[\s-]+commons\b|\bopen[\s-]+source\b"
    r"|\bcc(?:[\s-]+by(?:[\s-]+sa)?)?(?:[\s-]*[0-9](?:\.[0-9])?)?(?!\w)|\bfree[\s-]+licen[cs]e"
)
_CLASSIFY = re.compile(
    r"\b(?:image\s+)?(?:classif\w*|categori[sz]\w*)|\b(?:one\s+)?labels?\s+per\s+image\b"
    r"|\bimage[\s-]level\s+labels?\b"
)
_SEGMENT = re.compile(
    r"\b(?:instance\s+|semantic\s+|panoptic\s+|image\s+)?segment\w*(?:\s+masks?)?"
    r"|\b(?:with|pixel|instance|semantic|binary|polygon|object)\s+masks?\b|\bmasks?\s+(?:for|of)\b"
)
_DETECT = re.compile(
    r"\b(?:object\s+)?detect\w*|\bbounding[\s-]*box(?:es)?\b|\bbbox(?:es)?\b"
    r"|\b(?:with|draw|drawing|as)\s+boxes\b|\bboxes\s+(?:around|for|on)\b"
    r"|\blocat(?:e|es|ing)\b|\blocali[sz]\w*"
)
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”')
_QREF = re.compile("\ue000(.)\ue001")
_MARKER = re.compile(r"\b(?:classes|categories|labels|class\s+names)\s*(?:are\s*)?:")
_COLON = re.compile(r":(?!\s*[0-9])")
_SENTENCE_END = re.compile(r"[.!?\n](?=\s|$)")
_SEP = re.compile(r"[,;:!?\n()\[\]{}|/\\&+<>]|\.(?=\s|$)")
_AND = re.compile(r"\s+(?:and|or|vs\.?|versus|plus|as\s+well\s+as|along\s+with)\s+")
_CUT = re.compile(r"\s(?:in|on|at|from|for|taken|found|during|under|that|which|who|where)\s.*$")
_SEG_COUNT = re.compile(
    rf"{_NUM}\s*{_MORE}(?:{_IMG}\s+(?:of|showing|with|containing|featuring)\s+)?(?P<rest>.*)$"
)
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_PURE_NUMBER = re.compile(r"[0-9][0-9.,]*")
_HAS_ALNUM = re.compile(r"[^\W_]")
_PUNCT = "\"'`*_~#^=<>.,;:!?()[]{}-"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ADD_WORDS = _words("add another extra more additional")
_IMG_WORDS = _words("image images photo photos photograph photographs picture pictures pic pics")
_LINK = _words("of with showing containing featuring depicting from for that in")
_LEAD = _ADD_WORDS | _words(
    """a an the i i'd i'm we we'd we're you me us my our your it its this these those them they
    some any all both each every per want wants wanted need needs would like to please make
    build create collect generate get gather give find fetch download scrape label annotate
    expand extend grow enlarge augment increase use using include including includes containing
    contains contain showing show shows featuring have has having should must will can could is
    are be there let's lets help thanks thank something anything stuff things nice good great
    cool interesting random useful dataset datasets set sets data collection class classes
    category categories labels kind kinds type types sort sorts new different distinct various
    several of with between among for from in on at into as by only just also around about
    approximately roughly up least most total overall and or e.g eg i.e ie etc format formats
    export exported split splits licensed licenced license licence licenses licences annotated
    labelled labeled real real-world across samples examples"""
)
_TRAIL = _IMG_WORDS | _words(
    """dataset datasets data class classes category categories labels label each only please in
    as with for from of to on and or the a an format formats etc vs too also split splits total
    overall altogether set samples examples"""
)
_IRREGULAR = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
    "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife", "wolves": "wolf",
    "leaves": "leaf", "halves": "half", "shelves": "shelf", "calves": "calf", "wives": "wife",
    "buses": "bus", "lenses": "lens", "potatoes": "potato", "tomatoes": "tomato",
    "heroes": "hero", "cacti": "cactus", "fungi": "fungus", "oxen": "ox",
}  # fmt: skip
_SINGULAR_IRREGULAR = {v: k for k, v in _IRREGULAR.items()}
_INVARIANT = _words(
    "sheep fish deer moose bison salmon trout shrimp squid aircraft series species news chess "
    "scissors pants jeans shorts trousers glasses binoculars"
)


def fail(what: str, example: str = EXAMPLE) -> SpecError:
    """A one-line SpecError: what is wrong, then a request that works."""
    return SpecError(" ".join(f'{what}; e.g. datasetagent plan "{example}"'.split()))


def show(text: str) -> str:
    short = " ".join(text.split())
    return f'"{short[:60]}…"' if len(short) > 60 else f'"{short}"'


def _number(m: re.Match[str]) -> int:
    raw = m.group("num")
    value = Decimal(raw[:13]) * (1000 if m.group("mult") else 1)
    bad = m.group("neg") or len(raw) > 12 or value != value.to_integral_value()
    if bad or not 0 < value <= MAX_COUNT:
        raise fail(f"{show(m.group(0))} is not a usable count: counts are whole numbers from 1")
    return int(value)


@dataclass(frozen=True)
class Count:
    """A number of images; ``add`` when it comes on top of what a class has ("add 50")."""

    value: int
    add: bool


@dataclass(frozen=True)
class Phrase:
    """One class name as the request gives it, with the count written in front of it, if any."""

    name: str
    count: int | None
    add: bool


def read_request(text: str) -> RequestReading:
    """Read ``text``: what its phrases ask for, and the class names left after them."""
    reading = RequestReading(text)
    reading.phrases = reading.parse()
    return reading


class RequestReading:
    """What one request asks for; each pass records what it finds here and cuts its phrase out."""

    def __init__(self, request: str) -> None:
        self.request = request
        self.phrases: list[Phrase] = []  # the class names, in order, with their own counts
        self.quotes: list[str] = []
        self.tasks: set[TaskKind] = set()
        self.formats: list[str] = []
        self.licence = 0  # index into LICENCE_MODES
        self.split: dict[str, float] | None = None
        self.named_split: list[tuple[str, str]] = []
        self.min_side: int | None = None
        self.size: tuple[int, int] | None = None
        self.color: ColorMode | None = None
        self.per_class: Count | None = None
        self.total: Count | None = None
        self.class_count: int | None = None

    def parse(self) -> list[Phrase]:
        """Run the passes; return the class phrases of what is left."""
        clean = (
            " " if unicodedata.category(c)[0] == "C" and c != "\n" else c for c in self.request
        )
        work = _QUOTED.sub(self._on_quote, "".join(clean)).lower().replace("’", "'")
        work = _THOUSANDS.sub("", work)  # "1,000" -> "1000" before commas separate classes
        passes: list[tuple[re.Pattern[str], _Handler]] = [
            (_SPLIT, self._on_split), (_NAMED_SPLIT, self._on_named_split),
            (_MIN_SIDE, self._on_min_side), (_SIZE, self._on_size),
            (_GREY, self._colour("L")), (_COLOUR, self._colour("RGB")),
            *((p, self._on_per_class) for p in _PER_CLASS), (_CLASS_COUNT, self._on_class_count),
            *((p, self._on_total) for p in _TOTALS), (_FORMAT, self._on_format),
            (_NONCOMMERCIAL, self._licence(0)), (_PERMISSIVE, self._licence(2)),
            (_OPEN, self._licence(1)), (_CLASSIFY, self._task("classification")),
            (_SEGMENT, self._task("segmentation")), (_DETECT, self._task("detection")),
        ]  # fmt: skip
        for pattern, handler in passes:
            work = pattern.sub(handler, work)
        if self.named_split:
            names, values = zip(*self.named_split, strict=True)
            shown = " ".join(f"{v}% {n}" for n, v in self.named_split)
            self._set_split(list(names), list(values), shown)
        # "classes: a, b" or "dog breeds: a, b": the names run from the colon to the sentence end
        marker = _MARKER.search(work)
        colon = marker or _COLON.search(work)
        if colon is not None:
            region = _SENTENCE_END.split(work[colon.end() :], maxsplit=1)[0]
            phrases = self._phrases(region, marker is not None)
            if marker is not None or len(phrases) > 1:
                return phrases
        return self._phrases(work, False)

    def _phrases(self, text: str, marker: bool) -> list[Phrase]:
        pieces = (piece for part in _SEP.split(text) for piece in _AND.split(part))
        return [phrase for piece in pieces for phrase in self._piece(piece, marker)]

    def _on_quote(self, m: re.Match[str]) -> str:
        text = " ".join((m.group(1) or m.group(2) or "").split())
        if not text or len(self.quotes) >= 0x700:
            return " "
        self.quotes.append(text)
        return f" \ue000{chr(0xE100 + len(self.quotes) - 1)}\ue001 "

    def _on_split(self, m: re.Match[str]) -> str:
        values = [m.group(g).strip(" %") for g in ("a", "b", "c") if m.group(g)]
        named = m.group("names") or m.group("names2")
        names = [SPLIT_ALIASES[n] for n in re.split(r"\s*/\s*", named)] if named else None
        self._set_split(names or ["train", "val", "test"][: len(values)], values, m.group(0))
        return " , "

    def _on_named_split(self, m: re.Match[str]) -> str:  # "80% train", "test: 10%"
        self.named_split.append((SPLIT_ALIASES[m.group("n") or m.group("n2")], m["v"] or m["v2"]))
        return " , "

    def _set_split(self, names: Sequence[str], values: list[str], shown: str) -> None:
        example = "cats and dogs, 80/10/10 split"
        if len(names) != len(values) or len(set(names)) != len(names):
            raise fail(f"cannot match the split {show(shown)} to train/val/test", example)
        if self.split is not None:
            raise fail("the request gives two splits; give one", example)
        shares = {k: Decimal(v[:13]) for k, v in zip(names, values, strict=True)}
        total = sum(shares.values(), Decimal(0))
        if total not in (1, 100) or any(len(v) > 12 for v in values):
            raise fail(f"the split {show(shown)} adds up to {total}, not 100", example)
        self.split = {k: float(shares.get(k, Decimal(0)) / total) for k in ("train", "val", "test")}

    def _on_min_side(self, m: re.Match[str]) -> str:
        side = int(m.group("s")) if m.group("s") else min(int(m.group("w")), int(m.group("h")))
        if not 1 <= side <= MAX_SIDE or self.min_side not in (None, side):
            raise fail(
                f"cannot use {show(m.group(0))} as the one minimum image size",
                "cats and dogs, at least 224 px",
            )
        self.min_side = side
        return " , "

    def _on_size(self, m: re.Match[str]) -> str:
        size = (int(m.group("w")), int(m.group("h")))
        if not all(1 <= s <= MAX_SIDE for s in size) or self.size not in (None, size):
            raise fail(
                f"cannot use {show(m.group(0))} as the one image size",
                "cats and dogs, resized to 224x224",
            )
        self.size = size
        return " , "

    def _colour(self, mode: ColorMode) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            if self.color not in (None, mode):
                raise fail("the request asks for both colour and greyscale", "cats, greyscale")
            self.color = mode
            return " , "

        return handler

    def _on_per_class(self, m: re.Match[str]) -> str:
        count = Count(_number(m), bool(m.group("add") or m.groupdict().get("more")))
        if self.per_class not in (None, count):
            raise fail("the request gives two different counts per class; give one")
        self.per_class = count
        return " , "

    def _on_class_count(self, m: re.Match[str]) -> str:
        self.class_count = _number(m)
        return " , classes "  # keeps the marker of "3 classes: a, b, c"

    def _on_total(self, m: re.Match[str]) -> str:
        count = Count(_number(m), bool(m.group("add") or m.groupdict().get("more")))
        if self.total not in (None, count):
            raise fail("the request gives two different totals; give one, or counts per class")
        self.total = count
        return " , "

    def _on_format(self, m: re.Match[str]) -> str:
        word = m.group(0)
        fmt = next((f for f in ("coco", "yolo", "voc", "imagefolder") if f[:5] in word), "hf")
        if fmt not in self.formats:
            self.formats.append(fmt)
        return " , "

    def _licence(self, level: int) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            self.licence = max(self.licence, level)
            return " , "

        return handler

    def _task(self, task: TaskKind) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            self.tasks.add(task)
            return " , "

        return handler

    def _piece(self, piece: str, marker: bool) -> list[Phrase]:
        """The class name(s) in one list item, with a count in front of it if there is one."""
        add, tokens = _strip_lead([t for t in (w.strip(_PUNCT) for w in piece.split()) if t])
        if marker and _PURE_NUMBER.fullmatch(" ".join(tokens)):  # "classes: 0, 1, 2"
            return [Phrase(tokens[0], None, False)]
        count, m = None, _SEG_COUNT.match(" ".join(tokens))
        if m is not None:
            count = _number(m)
            more, tokens = _strip_lead(m.group("rest").split())
            add = add or more or bool(m.group("more"))
        tokens = _strip_trail(_CUT.sub("", " ".join(tokens)).split())
        name = " ".join(tokens)
        quoted = [self.quotes[ord(c) - 0xE100] for c in _QREF.findall(name)]
        if quoted:
            return [Phrase(q, count if i == 0 else None, add) for i, q in enumerate(quoted)]
        if count is None and not _HAS_ALNUM.search(name):
            return []
        if not _HAS_ALNUM.search(name) or _PURE_NUMBER.fullmatch(name):
            raise fail(
                f"could not tell what {count or name} counts in {show(self.request)}; "
                "say e.g. 200 images per class, or 1000 images in total"
            )
        if len(tokens) > MAX_NAME_WORDS:
            raise fail(
                f"{show(name)} does not look like a class name; separate names with "
                'commas, or put each in double quotes like "red fox"'
            )
        return [Phrase(name, count, add)]


def _strip_lead(tokens: list[str]) -> tuple[bool, list[str]]:
    """Drop leading filler words; True when one of them asks to add ("add", "more")."""
    add, i = False, 0
    while i < len(tokens):
        linked = tokens[i] in _IMG_WORDS and (i + 1 == len(tokens) or tokens[i + 1] in _LINK)
        if tokens[i] not in _LEAD and not linked:
            break
        add, i = add or tokens[i] in _ADD_WORDS, i + 1
    return add, tokens[i:]


def _strip_trail(tokens: list[str]) -> list[str]:
    while tokens and tokens[-1] in _TRAIL:
        tokens = tokens[:-1]
    return tokens


def word_forms(name: str) -> tuple[str, str | None]:
    """(singular form of ``name``, its other grammatical number or None), by its last word."""
    head, _, last = name.rpartition(" ")
    low = last.lower()
    if not last.isalpha() or len(last) < 3 or low in _INVARIANT:
        return name, None
    plural = low in _IRREGULAR or (
        low not in _SINGULAR_IRREGULAR
        and low.endswith("s")
        and not low.endswith(("ss", "us", "is"))
    )
    if low in _IRREGULAR or low in _SINGULAR_IRREGULAR:
        other = _IRREGULAR.get(low) or _SINGULAR_IRREGULAR[low]
    elif plural and low.endswith("ies") and len(low) > 4:
        other = last[:-3] + "y"
    elif plural:
        other = last[:-2] if low.endswith(("sses", "xes", "ches", "shes", "zzes")) else last[:-1]
    elif low.endswith("y") and low[-2] not in "aeiou":
        other = last[:-1] + "ies"
    else:
        other = last + ("es" if low.endswith(("s", "x", "z", "ch", "sh")) else "s")
    variant = f"{head} {other}" if head else other
    return (variant if plural else name), variant
