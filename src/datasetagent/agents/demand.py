"""Demand Analysis, rule path: turn a plain-English request into a :class:`DatasetSpec`.

:mod:`datasetagent.agents.demand_text` reads the request (phrases, counts, class names); this
module turns that reading, plus an optional existing dataset, into the spec. Choices made:

* Class names keep the user's words, lowercased; the other grammatical number ("cats" <->
  "cat") becomes a synonym and the prompt is "a photo of a cat".
* A total is spread evenly, the remainder to the first classes (1000 over three classes is
  334/333/333). A count before the first of several listed classes ("1000 images of cats and
  dogs") is a total for them; counts before several ("100 cats and 50 dogs") are per class.
  A per-class count and a total that disagree are an error.
* Detection and segmentation words together mean segmentation (COCO masks carry boxes too);
  classification with either is a contradiction. The task is never changed by a format: a
  box/mask format (COCO, YOLO, VOC) with no task word is an error that says to name the task
  or a classification format. "WxH", "resize to N" and "resized to N px" are the size images
  are fitted to; "N px", "at least N px" and "min WxH" set the minimum side. Of several
  licence words the strictest wins. "no enhancement" / "don't enhance" keep pixels as they come.
* Every phrase read as a setting is recorded (:class:`Planned` ``readings``), and words that
  are neither a setting nor a class (a trailing clause such as "in the wild", the domain in
  "dog breeds: ...") are reported as ``unused``.
* Expanding ``existing``: what the request leaves out is inherited (classes, task, colour mode,
  common size, split shares; the minimum side drops to the existing images'). The classes are
  the dataset's: a name the request gives becomes a new class only when it is introduced as one
  (a count, "add"/"new"/"more", a class list, quotes, "a zebra class"); other words ("this
  clothing dataset") are reported as unused, never made into classes. "N per class" and
  "to N per class" give the final count per class; "add N per class" / "N more per class" give
  each class its current count + N; "add N images" spreads N over the newly named classes, or
  over all classes when none is named. With no count, every class is balanced up to the largest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datasetagent.agents.demand_text import (
    EXAMPLE,
    LICENCE_MODES,
    SPLIT_ALIASES,
    Count,
    Phrase,
    Reading,
    RequestReading,
    fail,
    read_request,
    show,
    word_forms,
)
from datasetagent.errors import SpecError
from datasetagent.formats import default_formats, descriptor, formats_for
from datasetagent.models import Usage
from datasetagent.spec import (
    DEFAULT_MIN_SIDE,
    DEFAULT_TARGET_PER_CLASS,
    DatasetProfile,
    DatasetSpec,
    SourceSpec,
    TaskKind,
    class_name_problem,
    same_name,
)

if TYPE_CHECKING:
    from datasetagent.agents.demand_llm import LLMPlanner

__all__ = [
    "DemandAnalyst", "Planned", "existing_match", "parse_request", "plan_reading",
    "read_and_plan", "spec_from_reading",
]  # fmt: skip

_TASK_EXAMPLES: dict[TaskKind, str] = {
    "classification": EXAMPLE,
    "detection": "detect cars and bicycles, 300 images per class, COCO format",
    "segmentation": "segment cats and dogs, 200 images per class, COCO format",
}


def _same(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` (or their other grammatical numbers) name the same class."""
    return any(same_name(x, y) for x in word_forms(a) for y in word_forms(b) if x and y)


def existing_match(name: str, old: Iterable[str]) -> str | None:
    """The existing dataset's class that ``name`` refers to, if any."""
    return next((n for n in old if _same(n, name)), None)


def _slug(words: Sequence[str]) -> str:
    parts = [p for p in (re.sub(r"[^a-z0-9]+", "-", w.lower()).strip("-") for w in words) if p]
    if len(parts) > 4:
        parts = [*parts[:3], f"and-{len(parts) - 3}-more"]
    return "-".join(parts)[:80].strip("-") or "dataset"


@dataclass(frozen=True)
class Planned:
    """A planned spec with how the request was read: each phrase read as a setting or a class
    (in order), and the words that were neither."""

    spec: DatasetSpec
    readings: tuple[Reading, ...] = ()
    unused: tuple[str, ...] = ()


def _check_names(phrases: Sequence[Phrase], existing: DatasetProfile | None) -> None:
    if existing is not None:  # the names came from the dataset's folders or label files
        for name in existing.class_counts:
            problem = class_name_problem(name.strip())
            if problem is not None:
                raise SpecError(
                    f"existing dataset {existing.path}: {problem} (the name comes from its "
                    "class folders or label file; rename the class there)"
                )
    for i, p in enumerate(phrases):
        problem = class_name_problem(p.name)
        if problem is not None:
            raise fail(f"request: {problem}")
        clash = next((q.name for q in phrases[:i] if _same(q.name, p.name)), None)
        if clash is not None:
            same = f": {show(clash)} and {show(p.name)} name the same class" * (clash != p.name)
            raise fail(f"class {show(p.name)} is listed twice{same}")


def _class_entries(names: Sequence[str], targets: dict[str, int], default: int) -> list[object]:
    """Class entries; a synonym is left out where it could be read as another class's name."""
    for i, name in enumerate(names):
        first = next((n for n in names[:i] if same_name(n, name)), None)
        if first is not None:
            raise SpecError(
                f"the existing dataset's class folders {show(first)} and "
                f"{show(name)} name the same class; merge or rename one"
            )
    taken = [(name, name) for name in names]  # (class, one of its names)
    entries: list[object] = []
    for name in names:
        singular, variant = word_forms(name)
        keep = variant is not None and not any(
            owner != name and same_name(variant, other) for owner, other in taken
        )
        if keep and variant is not None:
            taken.append((name, variant))
        article = "an" if singular[:1].lower() in "aeiou" else "a"
        entries.append(
            {
                "name": name,
                "prompt": f"a photo of {article} {singular}",
                "synonyms": [variant] if keep else [],
                "target": None if targets[name] == default else targets[name],
            }
        )
    return entries


def _spread(total: int, n: int) -> list[int]:
    """``total`` over ``n`` classes as evenly as possible, the remainder to the first ones."""
    base, extra = divmod(total, n)
    return [base + 1] * extra + [base] * (n - extra)


def _targets(
    reading: RequestReading,
    resolved: Sequence[str],
    names: Sequence[str],
    old: dict[str, int],
    leading_total: bool = True,
) -> dict[str, int]:
    """The final number of images each class should have (see the module docstring).

    ``leading_total``: a count before the first of several classes, and no other, is a total
    for them (how requests are written; a planner that gives counts per class turns it off).
    """

    def final(name: str, count: Count) -> int:
        return old.get(name, 0) + count.value if count.add else count.value

    phrases = reading.phrases
    counted = [i for i, p in enumerate(phrases) if p.count is not None]
    total, group, explicit = reading.total, list(names), {}
    if leading_total and counted == [0] and len(phrases) > 1:  # "1000 images of cats and dogs"
        first = Count(phrases[0].count or 0, phrases[0].add)
        if total not in (None, first):
            raise fail("the request gives two different totals; give one, or counts per class")
        total, group = first, list(resolved)
    else:
        explicit = {resolved[i]: Count(phrases[i].count or 0, phrases[i].add) for i in counted}
        newly = [n for n in names if n not in old]
        if total is not None and total.add and newly:  # "add 300 images of zebras"
            group = newly
    out = {name: final(name, count) for name, count in explicit.items()}
    if total is not None:
        members = [n for n in group if n not in out]
        shares = _spread(total.value, len(members)) if members else [0]
        if shares[-1] < 1:
            raise fail(f"a total of {total.value} images cannot cover the classes it is for")
        by_total = {
            n: old.get(n, 0) + s if total.add else s for n, s in zip(members, shares, strict=True)
        }
        if reading.per_class is not None:
            by_class = {n: final(n, reading.per_class) for n in members}
            if sum(by_class.values()) != sum(by_total.values()):
                raise fail(
                    f"the request asks for {total.value} images in total but "
                    f"{reading.per_class.value} per class, which does not add up for "
                    f"{len(members)} classes; give one of the two"
                )
            by_total = by_class
        out.update(by_total)
    default = max(old.values(), default=0) or DEFAULT_TARGET_PER_CLASS
    for name in names:
        if name not in out:
            out[name] = final(name, reading.per_class) if reading.per_class else default
    return out


def _resolve_task(reading: RequestReading, existing: DatasetProfile | None) -> TaskKind:
    tasks = reading.tasks
    if "classification" in tasks and len(tasks) > 1:
        other = sorted(tasks - {"classification"})[0]
        raise fail(f"the request asks for both classification and {other}; pick one task")
    stated: TaskKind | None = "segmentation" if "segmentation" in tasks else next(iter(tasks), None)
    if existing is not None:
        # masks hold their boxes: a segmentation dataset (a COCO instances file) also serves
        # a detection request; no other change of task keeps the dataset's labels
        if stated == "detection" and existing.task == "segmentation":
            return stated
        if stated not in (None, existing.task):
            what = f"the existing dataset is for {existing.task} but the request asks for {stated}"
            raise fail(what, "add 100 images per class")
        return existing.task
    return stated or "classification"  # a format never changes the task: see _check_formats


def _profile_splits(counts: dict[str, int]) -> dict[str, float] | None:
    """Split shares of an existing dataset (2 decimals, adding up to exactly 1), if it has any."""
    merged: Counter[str] = Counter()
    for name, n in counts.items():
        key = SPLIT_ALIASES.get(name.strip().lower())
        if key is not None and n > 0:
            merged[key] += n
    if len(merged) < 2:
        return None
    total = sum(merged.values())
    hundredths = {k: round(100 * v / total) for k, v in merged.items()}
    hundredths[max(hundredths, key=hundredths.__getitem__)] += 100 - sum(hundredths.values())
    return {k: hundredths.get(k, 0) / 100 for k in ("train", "val", "test")}


def _check_formats(formats: Sequence[str], task: TaskKind, stated: bool) -> None:
    for fmt in formats:
        found = descriptor(fmt)
        if task in found.tasks:
            continue
        fits = ", ".join(formats_for(task))
        if not stated and task == "classification":  # "cats and dogs in COCO format"
            raise fail(
                f"the {fmt} format holds boxes or masks, but the request asks for no "
                f'detection or segmentation; say "detect ..." (boxes) or "segment ..." '
                f"(masks), or export classification as {fits}",
                _TASK_EXAMPLES["detection"],
            )
        hint = f" ({found.hint})" if found.hint else ""
        raise fail(
            f"the {fmt} format cannot hold {task} labels; use {fits}{hint}",
            _TASK_EXAMPLES[task],
        )


def parse_request(
    text: str, *, existing: DatasetProfile | None = None, sources: Sequence[SourceSpec] = ()
) -> DatasetSpec:
    """Plan a dataset from ``text`` by rule (the module docstring says how it reads requests).

    With ``existing``, what the request does not say is inherited from that dataset. Raises
    :class:`SpecError` (one line, with an example that works) for a request that names no
    classes or contradicts itself.
    """
    return read_and_plan(text, existing=existing, sources=sources).spec


def read_and_plan(
    text: str, *, existing: DatasetProfile | None = None, sources: Sequence[SourceSpec] = ()
) -> Planned:
    """:func:`parse_request` with how each phrase was read and the words left unused."""
    return plan_reading(read_request(text), existing=existing, sources=sources)


def spec_from_reading(
    reading: RequestReading,
    *,
    existing: DatasetProfile | None = None,
    sources: Sequence[SourceSpec] = (),
    leading_total: bool = True,
) -> DatasetSpec:
    """The spec of a request already read (see :func:`plan_reading`)."""
    return plan_reading(
        reading, existing=existing, sources=sources, leading_total=leading_total
    ).spec


def plan_reading(
    reading: RequestReading,
    *,
    existing: DatasetProfile | None = None,
    sources: Sequence[SourceSpec] = (),
    leading_total: bool = True,
) -> Planned:
    """The spec of a request already read: checks, inheritance from ``existing``, defaults.

    :func:`parse_request` reads the text by rule; an LLM planner fills a
    :class:`RequestReading` from its structured answer (with ``leading_total=False``, as it
    gives counts per class) and gets the same checks, messages and inheritance. With
    ``existing``, names the request mentions only in passing move from ``reading.phrases`` to
    ``reading.unused``.
    """
    text = reading.request
    old = dict(existing.class_counts) if existing is not None else {}
    if existing is not None:
        kept = []
        for p in reading.phrases:
            if p.explicit or existing_match(p.name, old) is not None:
                kept.append(p)
            else:
                reading.unused.append(p.name)
        reading.phrases = kept
    phrases = reading.phrases
    _check_names(phrases, existing)
    if reading.class_count is not None and phrases and reading.class_count != len(phrases):
        listed = ", ".join(p.name for p in phrases)
        raise fail(
            f"the request says {reading.class_count} classes but names {len(phrases)}: "
            f"{show(listed)}"
        )
    if not phrases and not old:
        raise fail(f"could not find any classes in {show(text)}; name them")
    task = _resolve_task(reading, existing)
    formats = tuple(reading.formats) or default_formats(task)
    _check_formats(formats, task, bool(reading.tasks) or existing is not None)
    if task == "classification" and len(phrases) + len(old) == 1:
        only = phrases[0].name if phrases else next(iter(old))
        raise fail(
            f"a classification dataset needs at least two classes, the request names only "
            f'{show(only)}; add another class, or ask for detection ("detect {only}")'
        )
    names, resolved = list(old), []
    for p in phrases:  # a class the existing dataset has already is the same class
        match = existing_match(p.name, old)
        if match is None:
            names.append(p.name)
        resolved.append(match or p.name)
    targets = _targets(reading, resolved, names, old, leading_total)
    per_class = Counter(targets[n] for n in names).most_common(1)[0][0]
    min_side = reading.min_side
    if min_side is None and existing is not None:
        min_side = min(DEFAULT_MIN_SIDE, existing.min_side)
    image = {
        "min_side": min_side,
        "size": reading.size or (existing.common_size if existing is not None else None),
        "color_mode": reading.color or (existing.color_mode if existing is not None else None),
        # new images should look like the existing ones, which were not enhanced
        "enhance": reading.enhance or ("off" if existing is not None else None),
    }
    data: dict[str, object] = {
        "name": _slug([word_forms(n)[0] for n in names]),
        "task": task,
        "classes": _class_entries(names, targets, per_class),
        "target_per_class": per_class,
        "image": {k: v for k, v in image.items() if v is not None},
        "sources": list(sources),
        "existing": existing.path if existing is not None else None,
        "licences": {
            "mode": LICENCE_MODES[reading.licence] if reading.licence else "open",
            "allow_nc": reading.allow_nc,
        },
        "formats": formats,
        "request": text,
    }
    splits = reading.split or (_profile_splits(existing.split_counts) if existing else None)
    if splits is not None:
        data["splits"] = splits
    spec = DatasetSpec.validated(data, origin="request")
    classes = [
        Reading(p.name, f"existing class: {r}" if r in old else f"class: {r}")
        for p, r in zip(phrases, resolved, strict=True)
    ]
    return Planned(spec, (*reading.readings, *classes), tuple(reading.unused))


class DemandAnalyst:
    """The Demand Analysis agent: request (+ existing dataset, sources) -> DatasetSpec.

    ``llm`` is a model string (``ollama:qwen2.5:7b``, ``openai:gpt-4o-mini``) to plan with
    through :mod:`datasetagent.agents.demand_llm`, with ``options`` as for the ``llm`` labeler;
    without one, requests are planned by rule. The model string, options and key are checked
    here; ``usage`` adds up the LLM calls of every plan.
    """

    def __init__(
        self,
        llm: str | None = None,
        *,
        options: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.llm = llm
        self._planner: LLMPlanner | None = None
        self.usage = Usage()
        if llm is not None:
            from datasetagent.agents.demand_llm import LLMPlanner

            self._planner = LLMPlanner(llm, options=options, environ=environ)
            self.usage = self._planner.usage

    def plan(
        self,
        request: str,
        *,
        existing: DatasetProfile | None = None,
        sources: Sequence[SourceSpec] = (),
    ) -> DatasetSpec:
        """Plan with the LLM if there is one, else by rule (see :func:`parse_request`)."""
        return self.explain(request, existing=existing, sources=sources).spec

    def explain(
        self,
        request: str,
        *,
        existing: DatasetProfile | None = None,
        sources: Sequence[SourceSpec] = (),
    ) -> Planned:
        """:meth:`plan`, with how each phrase (or LLM plan field) was read and unused words."""
        if self._planner is None:
            return read_and_plan(request, existing=existing, sources=sources)
        return self._planner.explain(request, existing=existing, sources=sources)
