"""Reading a dataset request: the phrase passes and the class names left after them.

:func:`read_request` runs a row of regular-expression passes over the lowercased text. Each pass
recognises one kind of phrase (a split, an image size or minimum side, colour, enhancement,
counts, formats, licences, task words), records what it means on the :class:`RequestReading`
(and, as a :class:`Reading`, how the phrase was read) and cuts the phrase out. What is
left is split on list separators (commas, "and", "or", "vs", "/", "&") into class names, after
filler words ("a dataset of", "images", "please") are trimmed from both ends of each piece and
trailing clauses ("in the wild", "for my thesis") are dropped. When a colon is followed by a
list ("dog breeds: beagle, poodle"), the list is the classes. A name in double quotes is taken
verbatim, case included. Dropped clauses and words outside a class list are kept in
``unused``; each name records whether the request introduced it as a class (``explicit``).
:mod:`datasetagent.agents.demand` turns the reading into a spec.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeAlias

from datasetagent.errors import SpecError
from datasetagent.formats import descriptors
from datasetagent.spec import SPLIT_ALIASES, ColorMode, TaskKind

__all__ = [
    "EXAMPLE", "LICENCE_MODES", "SPLIT_ALIASES", "Count", "Phrase", "Reading", "RequestReading",
    "fail", "read_request", "show", "word_forms",
]  # fmt: skip

EXAMPLE = "cats, dogs and horses, 200 images per class"
#: In order of strictness; a request that names no licence gets the spec's default, ``open``.
LICENCE_MODES = ("any", "open", "permissive")
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
    # "256 px" (not the height of "256 x 256 px")
    rf"|(?:{_MIN_KW})?(?<![\w.])(?<![x×]\s)(?<!\sby\s)(?P<s>[0-9]+)\s*(?:px|pixels?)\b)"
)
_RESIZE = (
    r"\b(?:resiz(?:e|ed|ing)|(?:down)?scal(?:e|ed|ing)|fit(?:ted|ting)?|crop(?:ped|ping)?"
    r"|shrunk|shrink)\s+(?:(?:all|every|each)\s+)?(?:(?:of\s+)?the\s+)?"
    r"(?:(?:images|photos|pictures|them|it|everything)\s+)?"
    r"(?:down\s+)?(?:to\s+)?(?:be\s+)?"
)
_SIZE = re.compile(
    rf"(?:{_RESIZE}|\b(?:at|of|size|sized)\s+)?(?<![\w.])(?P<w>[0-9]+)\s*(?:[x×]|by)\s*"
    r"(?P<h>[0-9]+)(?:\s*(?:px|pixels?))?(?![\w.])"
)
#: "resize to 128", "resized to 256 px": a square size
_SQUARE = re.compile(
    rf"{_RESIZE}(?<![\w.])(?P<s>[0-9]+)(?:\s*(?:px|pixels?))?(?:\s+squares?)?(?![\w.×])"
    r"(?!\s*(?:x|×|by)\s*[0-9])"
)
_ENHANCE_OFF = re.compile(
    r"\b(?:no|without|skip(?:ping)?|disabled?|turn\s+off)\s+(?:any\s+|the\s+|image\s+)*"
    r"(?:enhancements?|enhancing|enhance|enhancer)\b"
    r"|\b(?:do\s+not|don't|dont|never|not)\s+(?:to\s+)?enhanc(?:e|ed|ing)\b"
    r"(?:\s+(?:them|it|the\s+images|the\s+photos|images|photos|anything))?"
    r"|\bun[\s-]?enhanced\b|\benhance(?:ment)?\s*(?:[:=]\s*|\s)(?:off|no|none|false)\b"
    r"|\bkeep\s+(?:the\s+)?(?:original\s+)?(?:pixels|images|photos)\s+(?:as\s+they\s+are|untouched"
    r"|unchanged|unmodified)\b|\b(?:keep\s+)?(?:the\s+)?original\s+pixels\b"
)
_ENHANCE_ON = re.compile(
    r"\b(?:with\s+(?:image\s+)?enhancements?|auto[\s-]?enhanc(?:e|ed|ement)"
    r"|enhance(?:d)?\s+(?:the\s+)?(?:images|photos|pictures|them)"
    r"|enhance(?:ment)?\s*(?:[:=]\s*|\s)(?:on|auto|yes|true))\b"
)
_GREY = re.compile(r"\b(?:gr[ae]y[\s-]*scale|black[\s-]+and[\s-]+white|b\s*&\s*w|monochrome)\b")
_COLOUR = re.compile(r"\b(?:in\s+(?:full\s+)?colou?r|full[\s-]colou?r|rgb)\b")
_PER_CLASS = tuple(
    re.compile(p)
    for p in (
        rf"{_ADD}{_NUM}\s*{_MORE}(?:{_IMG}\s+)?(?:(?:per|a)\s+{_UNIT}\b"
        rf"|(?:for\s+|of\s+|in\s+)?(?:each|every)\b(?:\s+(?:of\s+the\s+)?{_UNIT}\b)?)",
        rf"\b(?:each|every|per)\s+{_UNIT}\s*"
        rf"(?::|(?:up\s+)?to|should\s+have|will\s+have|with|has|having|gets?)?"
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
_FORMAT_LEAD = (
    r"(?:\b(?:export(?:ed)?|sav(?:e|ed)|output|writ(?:e|ten)|deliver(?:ed)?|stored?)"
    r"(?:\s+(?:it|them|the\s+(?:dataset|data|labels|annotations|images)))?\s+)?"
    r"(?:\b(?:in|as|to|into)\s+)?(?:(?:the|a)\s+)?"
)


def _format_words() -> tuple[tuple[str, str], ...]:
    """(format, word pattern) for every word a request may name a format by (its descriptor's
    ``words``)."""
    return tuple((d.name, w) for d in descriptors() for w in d.words)


@functools.cache
def _format_pattern(words: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    named = "|".join(w for _, w in words)
    return re.compile(rf"{_FORMAT_LEAD}\b(?P<fmt>{named})\b(?:\s+(?:format|layout|style|files?))?")


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
_MARKER = re.compile(
    r"\b(?:class(?:es)?|categor(?:y|ies)|labels|class\s+names)\s*(?:are\s*|is\s*)?:"
)
_COLON = re.compile(r":(?!\s*[0-9])")
_SENTENCE_END = re.compile(r"[.!?\n](?=\s|$)")
#: What a pass leaves in place of the phrase it read: a list separator that also ends a run of
#: class names (see ``RequestReading._phrases``).
_BREAK = " \ue002 "
#: ... left by a count that adds to a dataset ("add 50 per class"): the names after it in the
#: same sentence are new classes ("add 50 per class, and horses").
_ADDING = " \ue003 "
_RUN = re.compile(r"(\ue002|\ue003)")
_SEP = re.compile(r"[,;:!?\n()\[\]{}|/\\&+<>\ue002\ue003]|\.(?=\s|$)")
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
#: Lead words that introduce a new class explicitly (when expanding a dataset, only such
#: names, names with a count and names in a class list become new classes).
_NEW_WORDS = _ADD_WORDS | _words("new include including includes plus")
_CLASS_WORDS = _words("class classes category categories label labels")
_GROW_WORDS = _words("expand extend grow enlarge augment")  # "expand it with zebras"
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
    labelled labeled real real-world across samples examples balance rebalance called named top
    fill bring"""
)
_TRAIL = _IMG_WORDS | _words(
    """dataset datasets data class classes category categories labels label each only please in
    as with for from of to on and or the a an format formats etc vs too also split splits total
    overall altogether set samples examples at be should must will is are all"""
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
    """One class name as the request gives it, with the count written in front of it, if any.

    ``explicit``: the request names it as a class (with a count, after "add"/"new", in a class
    list, quoted, or followed by "class"), not only in passing ("this clothing dataset").
    """

    name: str
    count: int | None
    add: bool
    explicit: bool = True


@dataclass(frozen=True)
class Reading:
    """How one phrase of a request was read: the phrase, and the setting it gives."""

    phrase: str
    setting: str


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
        self.licence = 0  # index into LICENCE_MODES; 0: the request names none
        self.allow_nc = False  # "non-commercial use": non-commercial licences are fine
        self.split: dict[str, float] | None = None
        self.named_split: list[tuple[str, str]] = []
        self.min_side: int | None = None
        self.size: tuple[int, int] | None = None
        self.color: ColorMode | None = None
        self.enhance: Literal["auto", "off"] | None = None
        self.per_class: Count | None = None
        self.total: Count | None = None
        self.class_count: int | None = None
        #: each phrase read as a setting, in the order read
        self.readings: list[Reading] = []
        #: words of the request that were neither a setting nor a class name
        self.unused: list[str] = []

    def note(self, phrase: str, setting: str) -> None:
        """Record that ``phrase`` was read as ``setting`` (``key: value`` of the spec)."""
        self.readings.append(Reading(" ".join(phrase.split()).strip(" ,;"), setting))

    def parse(self) -> list[Phrase]:
        """Run the passes; return the class phrases of what is left."""
        clean = (
            " " if unicodedata.category(c)[0] == "C" and c != "\n" else c for c in self.request
        )
        work = _QUOTED.sub(self._on_quote, "".join(clean)).lower().replace("’", "'")
        work = _THOUSANDS.sub("", work)  # "1,000" -> "1000" before commas separate classes
        format_words = _format_pattern(_format_words())
        passes: list[tuple[re.Pattern[str], _Handler]] = [
            (_SPLIT, self._on_split), (_NAMED_SPLIT, self._on_named_split),
            (_SQUARE, self._on_size), (_MIN_SIDE, self._on_min_side), (_SIZE, self._on_size),
            (_GREY, self._colour("L")), (_COLOUR, self._colour("RGB")),
            (_ENHANCE_OFF, self._enhance("off")), (_ENHANCE_ON, self._enhance("auto")),
            *((p, self._on_per_class) for p in _PER_CLASS), (_CLASS_COUNT, self._on_class_count),
            *((p, self._on_total) for p in _TOTALS), (format_words, self._on_format),
            (_NONCOMMERCIAL, self._non_commercial), (_PERMISSIVE, self._licence(2)),
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
            unused = len(self.unused)
            region, *after = _SENTENCE_END.split(work[colon.end() :], maxsplit=1)
            phrases = self._phrases(region, marker is not None)
            if marker is not None or len(phrases) > 1:
                self.unused += self._leftover(f"{work[: colon.start()]} {_BREAK} {' '.join(after)}")
                return phrases
            del self.unused[unused:]
        return self._phrases(work, False)

    def _phrases(self, text: str, marker: bool) -> list[Phrase]:
        """The class phrases of ``text``. In a run of names (up to a setting or sentence end),
        the names after one introduced as a class ("add zebras, okapis") are introduced too."""
        out: list[Phrase] = []
        for sentence in _SENTENCE_END.split(text):
            adding = False
            for run in _RUN.split(sentence):
                adding = adding or run == _ADDING.strip()
                listed = marker or adding
                for piece in (piece for part in _SEP.split(run) for piece in _AND.split(part)):
                    found = self._piece(piece, marker, listed)
                    intro = _introduces([w.strip(_PUNCT) for w in piece.split()])
                    listed = listed or intro or any(p.explicit for p in found)
                    out += found
        return out

    def _leftover(self, text: str) -> list[str]:
        """The words of ``text`` (outside the class list) that are not filler."""
        out = []
        for piece in (piece for part in _SEP.split(text) for piece in _AND.split(part)):
            words = [t for t in (w.strip(_PUNCT) for w in piece.split()) if t]
            name = " ".join(_strip_trail(_strip_lead(words)[1]))
            name = _QREF.sub(lambda m: f'"{self.quotes[ord(m[1]) - 0xE100]}"', name)
            if _HAS_ALNUM.search(name):
                out.append(name)
        return out

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
        return _BREAK

    def _on_named_split(self, m: re.Match[str]) -> str:  # "80% train", "test: 10%"
        self.named_split.append((SPLIT_ALIASES[m.group("n") or m.group("n2")], m["v"] or m["v2"]))
        return _BREAK

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
        parts = ", ".join(f"{k} {v:.4g}" for k, v in self.split.items())
        self.note(shown, f"splits: {parts}")

    def _on_min_side(self, m: re.Match[str]) -> str:
        side = int(m.group("s")) if m.group("s") else min(int(m.group("w")), int(m.group("h")))
        if not 1 <= side <= MAX_SIDE or self.min_side not in (None, side):
            raise fail(
                f"cannot use {show(m.group(0))} as the one minimum image size",
                "cats and dogs, at least 224 px",
            )
        self.min_side = side
        self.note(m.group(0), f"image.min_side: {side}")
        return _BREAK

    def _on_size(self, m: re.Match[str]) -> str:
        fields = m.groupdict()
        side = fields.get("s")
        size = (int(side), int(side)) if side else (int(m.group("w")), int(m.group("h")))
        if not all(1 <= s <= MAX_SIDE for s in size) or self.size not in (None, size):
            raise fail(
                f"cannot use {show(m.group(0))} as the one image size",
                "cats and dogs, resized to 224x224",
            )
        self.size = size
        self.note(m.group(0), f"image.size: {size[0]}x{size[1]}")
        return _BREAK

    def _colour(self, mode: ColorMode) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            if self.color not in (None, mode):
                raise fail("the request asks for both colour and greyscale", "cats, greyscale")
            self.color = mode
            self.note(m.group(0), f"image.color_mode: {mode}")
            return " "  # an adjective: "500 greyscale images of cats" stays one phrase

        return handler

    def _enhance(self, mode: Literal["auto", "off"]) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            if self.enhance not in (None, mode):
                raise fail(
                    "the request asks both to enhance images and not to; say one",
                    "cats and dogs, no enhancement",
                )
            self.enhance = mode
            self.note(m.group(0), f"image.enhance: {mode}")
            return _BREAK

        return handler

    def _on_per_class(self, m: re.Match[str]) -> str:
        count = Count(_number(m), bool(m.group("add") or m.groupdict().get("more")))
        if self.per_class not in (None, count):
            raise fail("the request gives two different counts per class; give one")
        self.per_class = count
        shown = f"each class: {count.value} more" if count.add else f"per class: {count.value}"
        self.note(m.group(0), shown)
        return _ADDING if count.add else _BREAK

    def _on_class_count(self, m: re.Match[str]) -> str:
        self.class_count = _number(m)
        self.note(m.group(0), f"number of classes: {self.class_count}")
        return f"{_BREAK} classes "  # keeps the marker of "3 classes: a, b, c"

    def _on_total(self, m: re.Match[str]) -> str:
        count = Count(_number(m), bool(m.group("add") or m.groupdict().get("more")))
        if self.total not in (None, count):
            raise fail("the request gives two different totals; give one, or counts per class")
        self.total = count
        self.note(m.group(0), f"total: {count.value}{' more' * count.add} images")
        return _ADDING if count.add else _BREAK

    def _on_format(self, m: re.Match[str]) -> str:
        word = m.group("fmt")
        fmt = next(f for f, w in _format_words() if re.fullmatch(w, word))
        if fmt not in self.formats:
            self.formats.append(fmt)
        self.note(m.group(0), f"formats: {fmt}")
        return _BREAK

    def _non_commercial(self, m: re.Match[str]) -> str:
        self.allow_nc = True
        self.note(m.group(0), "licences.allow_nc: true")
        return _BREAK

    def _licence(self, level: int) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            self.licence = max(self.licence, level)
            self.note(m.group(0), f"licences.mode: {LICENCE_MODES[level]}")
            return _BREAK

        return handler

    def _task(self, task: TaskKind) -> _Handler:
        def handler(m: re.Match[str]) -> str:
            self.tasks.add(task)
            self.note(m.group(0), f"task: {task}")
            return _BREAK

        return handler

    def _piece(self, piece: str, marker: bool, listed: bool = False) -> list[Phrase]:
        """The class name(s) in one list item, with a count in front of it if there is one.

        ``listed``: the item stands in a list of names introduced as classes."""
        words = [t for t in (w.strip(_PUNCT) for w in piece.split()) if t]
        add, tokens = _strip_lead(words)
        lead = words[: len(words) - len(tokens)]
        new = _introduces(lead)
        if marker and _PURE_NUMBER.fullmatch(" ".join(tokens)):  # "classes: 0, 1, 2"
            return [Phrase(tokens[0], None, False)]
        count, m = None, _SEG_COUNT.match(" ".join(tokens))
        if m is not None:
            count = _number(m)
            rest = m.group("rest").split()
            more, tokens = _strip_lead(rest)
            new = new or _introduces(rest[: len(rest) - len(tokens)])
            add = add or more or bool(m.group("more"))
        joined = " ".join(tokens)
        cut = _CUT.search(joined)
        if cut is not None:  # "cats in the wild": the clause is not part of the name
            if self._leftover(cut.group(0)):  # worth reporting: not only filler words
                self.unused.append(cut.group(0).strip())
            joined = joined[: cut.start()]
        tokens = joined.split()
        tokens, trail = _strip_trail(tokens), tokens
        named = trail[len(tokens) : len(tokens) + 1] in (
            [w] for w in _CLASS_WORDS
        )  # "a zebra class"
        explicit = marker or listed or new or named or count is not None
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
        return [Phrase(name, count, add, explicit)]


def _introduces(words: Sequence[str]) -> bool:
    """True when ``words`` introduce new classes: "add", "new", "more", "expand ... with"."""
    found = set(words)
    return bool(found & _NEW_WORDS) or ("with" in found and bool(found & _GROW_WORDS))


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
