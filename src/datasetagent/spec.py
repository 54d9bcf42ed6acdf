"""DatasetSpec: the structured form of what the user asked for.

Demand Analysis produces it, every later stage reads it, and ``RUN/spec.yaml`` records the one a
run actually used. It round-trips through JSON and YAML without loss.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datasetagent.errors import SpecError, UsageError
from datasetagent.formats import find, formats_for
from datasetagent.licences import USER_SUPPLIED as USER_SUPPLIED
from datasetagent.licences import terms as licence_terms

TaskKind = Literal["classification", "detection", "segmentation"]
ColorMode = Literal["RGB", "L"]
SplitName = Literal["train", "val", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "val", "test")
#: Words that name a split, in requests, folder names and split columns.
SPLIT_ALIASES: dict[str, SplitName] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

#: Images per class when a request names no count.
DEFAULT_TARGET_PER_CLASS = 100
#: Shorter side under which an image is ``tiny`` unless an existing dataset says otherwise.
DEFAULT_MIN_SIDE = 32

#: Longest class name, in UTF-8 bytes. Exporters make file and folder names from class names
#: (a folder per class, ``NAME.txt``-style files, suffixes such as ``_000001``); file systems
#: allow 255 bytes a name, so 200 leaves room for what exporters add.
MAX_CLASS_NAME_BYTES = 200
#: Smallest width or height images may be fitted to (``image.size``).
MIN_FIT_SIDE = 8


def class_name_problem(name: str) -> str | None:
    """Why ``name`` (already stripped) cannot be a class name, or None when it can.

    Class names become folder and file names in every export, so they must be usable as one.
    """
    if not name:
        return "a class name cannot be empty"
    control = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if control is not None:
        return f"class name {name!r} holds the control character {control!r}; remove it"
    if "/" in name or "\\" in name or name in {".", ".."}:
        return f"class name {name!r} cannot be used as a folder name (no / or \\, not . or ..)"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_CLASS_NAME_BYTES:
        return (
            f"class name {name[:40]!r}… is {size} bytes long in UTF-8; at most "
            f"{MAX_CLASS_NAME_BYTES} fit in a file name, shorten it"
        )
    return None


def format_task_problem(fmt: str, task: TaskKind) -> str | None:
    """Why the export format ``fmt`` cannot hold ``task`` labels (its descriptor says which it
    can, ``datasetagent.formats``), or None where it can or no format has the name."""
    found = find(fmt)
    if found is None or task in found.tasks:
        return None
    return f"the {fmt} format cannot hold {task} labels; use {', '.join(formats_for(task))}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassSpec(_Model):
    """One class: its name, the text a model or search engine is given, and its target."""

    name: str
    prompt: str = ""
    synonyms: tuple[str, ...] = ()
    target: Annotated[int, Field(ge=1)] | None = None

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        problem = class_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


class SplitSpec(_Model):
    """Shares of train/val/test; they must add up to 1. ``seed`` makes the split repeatable."""

    train: Annotated[float, Field(ge=0, le=1)] = 0.8
    val: Annotated[float, Field(ge=0, le=1)] = 0.1
    test: Annotated[float, Field(ge=0, le=1)] = 0.1
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split shares add up to {total:g}, not 1 (e.g. 0.8/0.1/0.1)")
        return self

    def shares(self) -> dict[SplitName, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


#: Issue names of the quality scan, in the order they are reported.
ISSUE_NAMES: tuple[str, ...] = (
    "corrupt", "tiny", "too_large", "dark", "bright", "blurry", "low_information", "odd_aspect",
    "exact_duplicate", "near_duplicate",
)  # fmt: skip


class CheckThresholds(_Model):
    """Where a quality score becomes an issue. Scores are measured on a copy of the image whose
    longer side is at most 160 px (smaller images as they are); README.md documents each."""

    #: ``odd_aspect``: longer side over shorter side above this.
    max_aspect: Annotated[float, Field(ge=1)] = 4.0
    #: ``dark``: the 99th percentile of luma (0-1) below this — even the highlights are dark.
    dark_highlights: Annotated[float, Field(ge=0, le=1)] = 0.25
    #: ``bright``: the 1st percentile of luma (0-1) above this — even the shadows are bright.
    bright_shadows: Annotated[float, Field(ge=0, le=1)] = 0.90
    #: ``low_information``: grey-level standard deviation (0-255) below this ...
    min_contrast: Annotated[float, Field(ge=0)] = 2.0
    #: ... or grey-level histogram entropy (bits) below this.
    min_entropy: Annotated[float, Field(ge=0)] = 0.15
    #: ``blurry``: variance of the Laplacian over the variance of grey levels below this (the
    #: ratio does not change with exposure or contrast, so dark images are not called blurry).
    min_sharpness: Annotated[float, Field(ge=0)] = 0.02
    #: ``near_duplicate``: perceptual-hash distance (bits of 64) at or below this.
    near_duplicate_bits: Annotated[int, Field(ge=0, le=32)] = 8
    #: Issues that are reported but do not reject the image.
    flag_only: tuple[str, ...] = ("blurry",)

    @field_validator("flag_only")
    @classmethod
    def _known_issues(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in ISSUE_NAMES]
        if unknown:
            raise ValueError(f"unknown issue {unknown[0]!r}; known: {', '.join(ISSUE_NAMES)}")
        return value

    def rejects(self, issues: list[str] | tuple[str, ...]) -> bool:
        return any(i not in self.flag_only for i in issues)


_SWITCH_WORDS: dict[str, Literal["auto", "off"]] = {
    **dict.fromkeys(("off", "no", "false", "none", "0"), "off"),
    **dict.fromkeys(("on", "yes", "true", "1"), "auto"),
}


class ImageConstraints(_Model):
    """What every image of the dataset must satisfy, and the form it is stored in."""

    min_side: Annotated[int, Field(ge=1)] = DEFAULT_MIN_SIDE
    max_pixels: Annotated[int, Field(ge=1)] = 100_000_000
    color_mode: ColorMode = "RGB"
    #: (width, height) every image is fitted to, or None to keep sizes as they come.
    size: tuple[int, int] | None = None
    #: How an image is fitted to ``size``: centre crop, pad (letterbox), or stretch.
    resize: Literal["crop", "letterbox", "stretch"] = "crop"
    checks: CheckThresholds = CheckThresholds()
    #: ``auto``: the rule policy may correct exposure, noise, colour cast, contrast, sharpness;
    #: ``off``: pixels are kept as they come (the default when expanding an existing dataset,
    #: whose images were not enhanced).
    enhance: Literal["auto", "off"] = "auto"
    #: An enhanced image whose SSIM to its input falls below this is restored to the input.
    ssim_floor: Annotated[float, Field(ge=0, le=1)] = 0.80

    @field_validator("enhance", mode="before")
    @classmethod
    def _enhance_words(cls, value: object) -> object:
        # YAML 1.1 reads ``enhance: off`` as false (and ``on``/``yes`` as true)
        if isinstance(value, bool):
            return "auto" if value else "off"
        if isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS:
            return _SWITCH_WORDS[value.strip().lower()]
        return value

    @model_validator(mode="after")
    def _size_fits(self) -> ImageConstraints:
        if self.size is not None:
            width, height = self.size
            if min(width, height) < MIN_FIT_SIDE:
                raise ValueError(
                    f"image size {width}x{height} is too small: width and height must each be "
                    f"at least {MIN_FIT_SIDE} px (e.g. 224x224), or leave size empty"
                )
            if width * height > self.max_pixels:
                raise ValueError(
                    f"image size {width}x{height} is {width * height} pixels, more than "
                    f"max_pixels ({self.max_pixels}); ask for a smaller size (e.g. 1024x1024)"
                )
        return self


class QualityTargets(_Model):
    """Targets the Supervision agent measures against (see DESIGN.md for the definitions)."""

    cbi_max: Annotated[float, Field(ge=0, le=1)] = 0.021
    ssim_mean_min: Annotated[float, Field(ge=0, le=1)] = 0.94
    alr_min: Annotated[float, Field(ge=0, le=1)] = 0.988
    #: A label below this confidence is sent to review instead of being accepted.
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.9
    #: What happens to an image no labeler labels with confidence (labelers unsure or in
    #: disagreement, no object found): held for human review, or rejected outright.
    uncertain: Literal["review", "reject"] = "review"

    @property
    def uncertain_status(self) -> Literal["review", "rejected"]:
        """The status an uncertain sample takes."""
        return "rejected" if self.uncertain == "reject" else "review"


#: Sources that search the web by name (``--source openverse``), not a path.
WEB_SEARCH_SOURCES = ("openverse", "wikimedia")
#: File name endings of URL lists (``--source urls.csv``).
URL_LIST_SUFFIXES = (".txt", ".csv", ".jsonl", ".parquet")


class SourceSpec(_Model):
    """Where candidate images come from. ``kind`` names an entry of the source registry:
    ``local`` (a folder), ``urls`` (a URL list file), ``openverse`` and ``wikimedia`` (web
    searches, ``location`` empty), or a plugin's.

    ``base_url`` points a web source at a mirror or a test server instead of its public API;
    ``options`` are the source's own settings (e.g. ``page_size``)."""

    kind: str = "local"
    location: str = ""
    base_url: str | None = None
    options: dict[str, str | int | float | bool] = {}

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``openverse``, ``wikimedia`` or either with ``@BASE_URL``; a URL list file
        (``.txt``, ``.csv``, ``.jsonl``, ``.parquet``); ``KIND:LOCATION``; or a bare path (a
        local folder)."""
        name, at, base = text.partition("@")
        if name in WEB_SEARCH_SOURCES and not Path(text).exists():
            if at and not re.match(r"https?://[^/\s]", base):
                raise UsageError(
                    f"--source {text}: the address after @ must be an http(s) URL, e.g. "
                    f"{name}@http://127.0.0.1:8080"
                )
            return cls(kind=name, base_url=base.rstrip("/") or None)
        kind, sep, rest = text.partition(":")
        if sep and re.fullmatch(r"[a-z][a-z0-9_-]+", kind) and not Path(text).exists():
            return cls(kind=kind, location=rest)
        if text.lower().endswith(URL_LIST_SUFFIXES) and not Path(text).is_dir():
            return cls(kind="urls", location=text)
        return cls(kind="local", location=text)


class LicencePolicy(_Model):
    """Which licences may enter the dataset, applied before an image is downloaded.

    ``open`` (the default) takes CC0, the Public Domain Mark, CC BY and CC BY-SA (any version);
    ``permissive`` leaves out share-alike too; ``any`` takes everything and records it. The
    switches add, to ``open`` or ``permissive``, non-commercial (``allow_nc``), no-derivatives
    (``allow_nd``) and unrecognised (``allow_unknown``) licences. Files from the user's own disk
    (and URL-list rows that name no licence) are recorded as ``user-supplied`` and always
    accepted: the user vouches for them.
    """

    mode: Literal["any", "open", "permissive"] = "open"
    allow_nc: bool = False
    allow_nd: bool = False
    allow_unknown: bool = False
    require_attribution_file: bool = True

    def allows(self, licence: str) -> bool:
        return self.refusal(licence) is None

    def refusal(self, licence: str) -> str | None:
        """Why ``licence`` (normalised, see ``licences.normalise``) may not enter, or None."""
        if self.mode == "any" or licence == USER_SUPPLIED:
            return None
        found = licence_terms(licence)
        if found is None:
            if self.allow_unknown:
                return None
            return f"{licence} is not a licence the policy knows (set licences.allow_unknown)"
        if found.non_commercial and not self.allow_nc:
            return f"{licence} forbids commercial use (set licences.allow_nc)"
        if found.no_derivatives and not self.allow_nd:
            return f"{licence} forbids derivatives (set licences.allow_nd)"
        if found.share_alike and self.mode == "permissive":
            return f"{licence} is share-alike, which the permissive policy leaves out"
        return None

    def describe(self) -> str:
        """The policy in a few words, for reports and the data card."""
        extra = [w for w, on in (("NC", self.allow_nc), ("ND", self.allow_nd)) if on]
        if self.allow_unknown:
            extra.append("unknown")
        return self.mode + (f" + {', '.join(extra)}" if extra and self.mode != "any" else "")


class Budget(_Model):
    """Bounds on one build: supervision rounds, candidates looked at, model calls, wall time."""

    max_rounds: Annotated[int, Field(ge=1)] = 20
    max_candidates: Annotated[int, Field(ge=1)] | None = None
    max_model_calls: Annotated[int, Field(ge=0)] | None = None
    max_seconds: Annotated[float, Field(gt=0)] | None = None


class DatasetSpec(_Model):
    """Everything a build needs to know about the dataset to make."""

    name: str = "dataset"
    task: TaskKind = "classification"
    classes: tuple[ClassSpec, ...]
    #: Default images (classification) per class where a class sets no target of its own.
    target_per_class: Annotated[int, Field(ge=1)] = DEFAULT_TARGET_PER_CLASS
    splits: SplitSpec = SplitSpec()
    image: ImageConstraints = ImageConstraints()
    quality: QualityTargets = QualityTargets()
    sources: tuple[SourceSpec, ...] = ()
    #: An existing dataset to expand (ImageFolder layout); its samples are kept as they are.
    existing: str | None = None
    licences: LicencePolicy = LicencePolicy()
    formats: tuple[str, ...] = ("imagefolder",)
    budget: Budget = Budget()
    #: The request text this spec was planned from, if any.
    request: str = ""

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if not self.classes:
            raise ValueError("a dataset needs at least one class")
        for i, a in enumerate(self.classes):
            for b in self.classes[i + 1 :]:
                if same_name(a.name, b.name):
                    raise ValueError(f"class {a.name!r} is listed twice (as {b.name!r} too)")
                for name in a.all_names():
                    for other in b.all_names():
                        if same_name(name, other):
                            raise ValueError(
                                f"{other!r} names both {a.name!r} and {b.name!r}; each class "
                                "name and synonym may belong to one class only"
                            )
        if not self.formats:
            raise ValueError("at least one export format is needed, e.g. imagefolder")
        for fmt in self.formats:  # an unknown format is refused where it is looked up
            problem = format_task_problem(fmt, self.task)
            if problem is not None:
                raise ValueError(problem)
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def target_for(self, name: str) -> int:
        for cls in self.classes:
            if cls.name == name:
                return cls.target or self.target_per_class
        raise KeyError(name)

    def targets(self) -> dict[str, int]:
        return {c.name: c.target or self.target_per_class for c in self.classes}

    def short_classes(self, have: Mapping[str, int]) -> list[str]:
        """The classes with fewer than their target in ``have`` (samples per class)."""
        return [c for c, target in self.targets().items() if have.get(c, 0) < target]

    def resolve_class(self, name: str) -> str | None:
        """The class that ``name`` (a class name, synonym or folder name) refers to, if any."""
        for cls in self.classes:
            if any(same_name(name, n) for n in cls.all_names()):
                return cls.name
        return None

    # -- serialisation -------------------------------------------------------------------------
    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if yaml.safe_load(text) != data:  # PyYAML writes some line-break characters raw
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
        return text

    @classmethod
    def from_yaml(cls, text: str, *, origin: str = "spec") -> DatasetSpec:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc.__class__.__name__
            raise SpecError(f"{origin}{where}: not valid YAML ({problem})") from exc
        except RecursionError as exc:
            raise SpecError(f"{origin}: nested too deeply to be a spec") from exc
        if not isinstance(data, dict):
            raise SpecError(
                f"{origin}: expected a mapping with at least 'classes', got {data!r:.60}"
            )
        return cls.validated(data, origin=origin)

    @classmethod
    def from_json(cls, text: str, *, origin: str = "spec") -> DatasetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{origin} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise SpecError(f"{origin}: nested too deeply to be a spec") from exc
        return cls.validated(data, origin=origin)

    @classmethod
    def validated(cls, data: object, *, origin: str = "spec") -> DatasetSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{origin}: {describe_validation_error(exc)}") from exc

    def anchored(self) -> DatasetSpec:
        """This spec with its local source folders and existing dataset as absolute paths
        (relative ones are taken from the current folder), so that the run reads, and its
        exports protect, the same folders whatever folder it is resumed or exported from."""

        def absolute(location: str) -> str:
            return str(Path(location).expanduser().absolute())

        sources = tuple(
            s.model_copy(update={"location": absolute(s.location)})
            if s.kind in ("local", "urls")
            else s
            for s in self.sources
        )
        existing = absolute(self.existing) if self.existing else self.existing
        return self.model_copy(update={"sources": sources, "existing": existing})

    def with_settings(self, settings: Sequence[str]) -> DatasetSpec:
        """This spec with ``KEY=VALUE`` settings applied (``quality.min_confidence=0.8``,
        ``image.size=128,128``, ``enhance=off``), validated like a spec file.

        KEY is a dotted path of the spec (a leaf name such as ``enhance`` alone where only one
        part of the spec has it); VALUE is read as YAML, with commas making a list and
        ``WxH`` a size. Raises :class:`SpecError` naming close keys for an unknown one.
        """
        data = self.model_dump(mode="json")
        for pair in settings:
            key, sep, raw = pair.partition("=")
            if not sep or not key.strip():
                raise SpecError(f"--set takes KEY=VALUE, got {pair!r} (e.g. --set enhance=off)")
            path = setting_path(key.strip())
            value = _setting_value(raw, tuple_field=path in _TUPLE_SETTINGS)
            if path == "image.size" and isinstance(value, int) and not isinstance(value, bool):
                value = [value, value]
            node = data
            *parents, leaf = path.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return DatasetSpec.validated(data, origin="--set")

    @classmethod
    def load(cls, path: str | Path) -> DatasetSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read spec {path}: {exc.strerror}") from exc
        if path.suffix.lower() == ".json":
            return cls.from_json(text, origin=str(path))
        return cls.from_yaml(text, origin=str(path))


class DatasetProfile(_Model):
    """What an existing dataset looks like; planning inherits from it what a request omits."""

    path: str
    task: TaskKind = "classification"
    class_counts: dict[str, int]
    #: Split name -> number of images, empty when the dataset has no split folders.
    split_counts: dict[str, int] = {}
    #: The one (width, height) all images share, or None when sizes vary.
    common_size: tuple[int, int] | None = None
    min_side: Annotated[int, Field(ge=1)]
    color_mode: ColorMode


def normalise_name(name: str) -> str:
    """Case-folded, in Unicode compatibility form (NFKC), with runs of spaces, underscores and
    hyphens made one space: names a reader cannot tell apart ("café" composed or with a
    combining accent, "Straße" and "STRASSE", full-width letters) are one name, as they are
    one folder on file systems that normalise or fold case."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return re.sub(r"[\s_\-]+", " ", unicodedata.normalize("NFKC", folded).strip())


def name_forms(name: str) -> set[str]:
    """The normalised name and the singulars it could be a plural of."""
    key = normalise_name(name)
    forms = {key}
    if len(key) > 3 and key.endswith("ies"):
        forms.add(key[:-3] + "y")
    if len(key) > 3 and key.endswith("es"):
        forms.add(key[:-2])
    if len(key) > 2 and key.endswith("s") and not key.endswith("ss"):
        forms.add(key[:-1])
    return forms


def same_name(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name the same thing up to case, separators and plural."""
    fa, fb = name_forms(a), name_forms(b)
    ka, kb = normalise_name(a), normalise_name(b)
    return ka in fb or kb in fa


def _setting_paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every leaf setting of ``model`` as a dotted path -> whether its value is a tuple."""
    out: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.update(_setting_paths(kind, f"{prefix}{name}."))
        elif name not in _NOT_SETTINGS:
            out[prefix + name] = getattr(kind, "__origin__", None) is tuple
    return out


#: Spec fields ``--set`` leaves alone: they have flags (``--source``, ``--existing``) or
#: belong in the request or a spec file.
_NOT_SETTINGS = frozenset({"classes", "sources", "existing", "request"})


def setting_path(key: str) -> str:
    """The dotted spec path ``key`` names (a full path, or a leaf name unique in the spec)."""
    paths = _SETTINGS
    if key in paths:
        return key
    leaf = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(leaf) == 1:
        return leaf[0]
    if len(leaf) > 1:
        raise SpecError(f"--set {key} is ambiguous; name one of {', '.join(leaf)}")
    close = difflib.get_close_matches(key, list(paths), n=3, cutoff=0.6)
    for name in difflib.get_close_matches(key, [p.rsplit(".", 1)[-1] for p in paths], n=3):
        close += [p for p in paths if p.rsplit(".", 1)[-1] == name]
    hint = (
        f"did you mean {' or '.join(dict.fromkeys(close))}?"
        if close
        else "settings are dotted spec paths such as quality.min_confidence or image.size"
    )
    raise SpecError(f"--set {key}: no such setting in the spec; {hint}")


def _setting_value(raw: str, *, tuple_field: bool) -> object:
    text = raw.strip()
    size = re.fullmatch(r"([0-9]+)\s*[x×]\s*([0-9]+)", text)
    if size is not None:
        return [int(size[1]), int(size[2])]
    if "," in text and not text.startswith(("[", "{")):
        return [_yaml_scalar(p) for p in text.split(",") if p.strip()]
    value = _yaml_scalar(text)
    return [value] if tuple_field and value is not None and not isinstance(value, list) else value


def _yaml_scalar(text: str) -> object:
    try:
        return yaml.safe_load(text.strip())
    except yaml.YAMLError:
        return text.strip()


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending field and what is wrong with it."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


_SETTINGS: dict[str, bool] = _setting_paths(DatasetSpec)
_TUPLE_SETTINGS = frozenset(p for p, is_tuple in _SETTINGS.items() if is_tuple)
