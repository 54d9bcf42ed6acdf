"""URL lists: images the user names by URL, in a text, CSV, JSON Lines or Parquet file.

* ``.txt``: one URL a line; blank lines and lines starting with ``#`` are ignored.
* ``.csv`` (a header row), ``.jsonl`` (one object a line) and ``.parquet`` (img2dataset-style;
  needs pyarrow, the ``hf`` extra): a ``url`` column, and optionally ``label``, ``licence`` (or
  ``license``), ``licence_url`` (or ``license_url``), ``creator``, ``page`` (the page the image
  is shown on) and ``title``. Column names are matched ignoring case; other columns are ignored.

Only http and https URLs are taken, and never one with a user name or password in it (an error
shows it with that part hidden). A URL listed twice is offered once (its first row counts).
Every problem stops the build before anything is downloaded, with an error naming the file and
the line (the row, for Parquet).

A ``label`` that names a class (by name or synonym, as class folders do) is the image's weak
label; rows whose label names no class carry none (a labeler labels them), and the labels are
reported once (``skip_messages``).

Licences: a row's ``licence``, with its ``licence_url`` where the name says too little, is
normalised (``licences.normalise``); a name no rule recognises is ``unknown``, which the default
licence policy refuses. A row with neither, or that says ``user-supplied``, is recorded as
``user-supplied``: the user vouches for the list they hand over, as for their own files, and the
policy accepts it.

Nothing is downloaded here. The pipeline downloads every listed URL itself, through its guarded
client, into a folder it names in ``downloads``, as ``download_name(url)``; ``read(url)``
returns that file's bytes (OSError where it is missing, as for a missing file).
"""

from __future__ import annotations

import csv
import importlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from datasetagent.errors import SourceError, UsageError
from datasetagent.licences import USER_SUPPLIED, normalise
from datasetagent.sources import SOURCES
from datasetagent.sources.downloads import read_download
from datasetagent.sources.files import open_regular
from datasetagent.spec import DatasetSpec, SourceSpec
from datasetagent.store import Candidate, WebInfo

__all__ = ["COLUMNS", "UrlList", "url_problem"]

#: The columns (keys) a URL list may have; ``url`` is required.
COLUMNS = ("url", "label", "licence", "licence_url", "creator", "page", "title")
#: Other spellings of the columns.
ALIASES = {"license": "licence", "license_url": "licence_url"}
#: The longest a URL is shown in an error.
SHOWN_LENGTH = 100


def shown(url: str) -> str:
    """``url`` as an error may show it: what stands before an ``@`` (a user name and password)
    hidden, and cut to ``SHOWN_LENGTH`` characters."""
    text = re.sub(r"[^/?#@\s]*@", "***@", url)
    return text if len(text) <= SHOWN_LENGTH else text[: SHOWN_LENGTH - 1] + "…"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched as an image of the list, or None where it can."""
    text = repr(shown(url))
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return f"{text} holds spaces or control characters; percent-encode them (a space is %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        return f"{text} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{text} is not an http(s) URL"
    if "@" in parts.netloc:
        return (
            f"{text} holds a user name or password, which a URL list may not carry; "
            "remove it (only public images can be collected)"
        )
    if not parts.hostname:
        return f"{text} names no host"
    return None


class _Row(NamedTuple):
    url: str
    label: str | None
    licence: str
    creator: str | None
    page: str | None
    licence_url: str | None
    title: str | None


#: One record of a list: where it is (``line 7``, ``row 3``) and its values by column.
_Record = tuple[str, dict[str, object]]


@SOURCES.register("urls")
class UrlList:
    """The images a URL list names (see the module's description).

    The whole list is read and checked when it is opened. Pickles small (workers only read
    downloads): the rows stay in the process that opened it.
    """

    kind = "urls"

    def __init__(self, source: SourceSpec, spec: DatasetSpec) -> None:
        self.path = Path(source.location).expanduser()
        self.name = source.location
        #: The folder the pipeline downloaded the listed URLs into (``download_name``).
        self.downloads: Path | None = None
        self._rows: list[_Row] = []
        self.duplicates = 0
        self.unknown_labels: Counter[str] = Counter()
        classes: dict[str, str | None] = {}
        seen: set[str] = set()
        for where, values in self._records():
            row = self._row(where, values)
            key = _key(row.url)
            if key in seen:
                self.duplicates += 1
                continue
            seen.add(key)
            if row.label is not None and row.label not in classes:
                classes[row.label] = spec.resolve_class(row.label)
            self._rows.append(row)
        if not self._rows:
            raise UsageError(
                f"URL list {self.name} lists no URLs; give one http(s) URL a line (.txt) or a "
                "'url' column (.csv, .jsonl, .parquet)"
            )
        self._classes = classes

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "name": self.name, "downloads": self.downloads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rows, self._classes = [], {}
        self.duplicates = 0
        self.unknown_labels = Counter()

    def __len__(self) -> int:
        return len(self._rows)

    # -- listing -------------------------------------------------------------------------------
    def candidates(self) -> Iterator[Candidate]:
        self.unknown_labels = Counter()
        for row in self._rows:
            hint = self._classes.get(row.label) if row.label is not None else None
            if row.label is not None and hint is None:
                self.unknown_labels[row.label] += 1
            yield Candidate(
                source_kind=self.kind,
                location=row.url,
                class_hint=hint,
                licence=row.licence,
                creator=row.creator,
                origin="collected",
                web=WebInfo(page=row.page, licence_url=row.licence_url, title=row.title),
            )

    def skip_messages(self) -> list[str]:
        """The duplicates the list held and the labels of its last listing that name no
        class, one line each."""
        lines = []
        if self.duplicates:
            lines.append(f"{self.duplicates} URL(s) listed twice in {self.name}, offered once")
        if self.unknown_labels:
            names = sorted(self.unknown_labels)
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            lines.append(
                f"{sum(self.unknown_labels.values())} URL(s) in {self.name} have a label that "
                f"names no class ({', '.join(map(repr, names[:10]))}{more}); they are labelled "
                "like unlabelled images"
            )
        return lines

    # -- reading -------------------------------------------------------------------------------
    def read(self, location: str) -> bytes:
        """The bytes the pipeline downloaded for the URL ``location`` (OSError when there are
        none: the download failed or was refused)."""
        if self.downloads is None:
            raise SourceError(
                f"the images of URL list {self.name} are read from their downloads, and no "
                "downloads folder was set; the pipeline downloads them first"
            )
        return read_download(self.downloads, location)

    # -- parsing -------------------------------------------------------------------------------
    def _fail(self, where: str, problem: str) -> UsageError:
        return UsageError(f"{self.name}{f' {where}' if where else ''}: {problem}")

    def _row(self, where: str, values: dict[str, object]) -> _Row:
        text = {key: self._text(where, key, values.get(key)) for key in COLUMNS}
        url = text["url"]
        if url is None:
            raise self._fail(where, "the url is empty; give the image's http(s) URL")
        for key in ("url", "page", "licence_url"):
            value = text[key]
            problem = url_problem(value) if value is not None else None
            if problem is not None:
                what = "" if key == "url" else f"{key} "
                raise self._fail(where, what + problem)
        licence, licence_url = text["licence"], text["licence_url"]
        if (licence is None and licence_url is None) or (licence or "").lower() == USER_SUPPLIED:
            licence = USER_SUPPLIED
        else:
            licence = normalise(licence, url=licence_url)
        return _Row(
            url=url,
            label=text["label"],
            licence=licence,
            creator=text["creator"],
            page=text["page"],
            licence_url=licence_url,
            title=text["title"],
        )

    def _text(self, where: str, key: str, value: object) -> str | None:
        """A cell as text, stripped; None where it is empty."""
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise self._fail(where, f"{key} must be text, not {type(value).__name__}")
        return value.strip() or None

    def _records(self) -> Iterator[_Record]:
        if not self.path.exists():
            raise UsageError(f"URL list {self.name} does not exist; give the path of the file")
        suffix = self.path.suffix.lower()
        if suffix == ".parquet":
            return self._parquet()
        readers = {".txt": self._text_lines, ".csv": self._csv, ".jsonl": self._jsonl}
        if suffix not in readers:
            raise UsageError(
                f"URL list {self.name}: a URL list is a .txt, .csv, .jsonl or .parquet file"
            )
        return readers[suffix]()

    def _columns(self, names: Sequence[object], where: str) -> dict[str, str]:
        """Our column name of each of ``names`` (a header, a JSON object's keys) we read."""
        found: dict[str, str] = {}
        for name in names:
            column = str(name).strip().lower()
            column = ALIASES.get(column, column)
            if column not in COLUMNS:
                continue
            if column in found.values():
                other = next(k for k, v in found.items() if v == column)
                raise self._fail(
                    where, f"{other!r} and {name!r} both give the {column}; keep one of them"
                )
            found[str(name)] = column
        if "url" not in found.values():
            has = ", ".join(repr(str(n)) for n in names) or "none"
            raise self._fail(
                where, f"no 'url' column (it has: {has}); name the column of image URLs 'url'"
            )
        return found

    def _lines(self) -> Iterator[tuple[int, str]]:
        """The lines of the list with their numbers, decoded one at a time, so a line that is
        not UTF-8 is named by its number."""
        try:
            raw = open_regular(self.path)
        except OSError as exc:
            raise UsageError(f"cannot read URL list {self.name}: {exc}") from exc
        with raw:
            for n, line in enumerate(raw, start=1):
                try:
                    text = line.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise self._fail(f"line {n}", "not UTF-8 text; save the list as UTF-8") from exc
                yield n, text

    def _text_lines(self) -> Iterator[_Record]:
        for n, line in self._lines():
            text = line.strip()
            if text and not text.startswith("#"):
                yield f"line {n}", {"url": text}

    def _csv(self) -> Iterator[_Record]:
        reader = csv.reader((text for _, text in self._lines()), strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            columns = self._columns(header, "line 1")
            index = {i: columns[name] for i, name in enumerate(header) if name in columns}
            for fields in reader:
                where = f"line {reader.line_num}"
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) > len(header):
                    raise self._fail(
                        where,
                        f"{len(fields)} fields but the header names {len(header)}; quote "
                        'fields that hold commas ("a, b")',
                    )
                yield where, {index[i]: v for i, v in enumerate(fields) if i in index}
        except csv.Error as exc:
            raise self._fail(f"line {reader.line_num}", f"not valid CSV ({exc})") from exc

    def _jsonl(self) -> Iterator[_Record]:
        for n, line in self._lines():
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise self._fail(where, f"not valid JSON ({exc.msg}, column {exc.colno})") from exc
            except RecursionError:  # json's parser recurses per level of nesting
                raise self._fail(where, "not valid JSON (nested too deep to read)") from None
            if not isinstance(value, dict):
                raise self._fail(
                    where,
                    f'expected a JSON object such as {{"url": "https://..."}}, not '
                    f"{type(value).__name__}",
                )
            columns = self._columns(list(value), where)
            yield where, {columns[k]: v for k, v in value.items() if k in columns}

    def _parquet(self) -> Iterator[_Record]:
        from datasetagent.formats import install_hint

        try:
            pa = importlib.import_module("pyarrow")
            pq = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:
            raise UsageError(
                f"URL list {self.name}: reading Parquet needs pyarrow: {install_hint('hf')}"
            ) from exc
        try:
            with open_regular(self.path) as fh:
                table = pq.ParquetFile(fh)
                names = list(table.schema_arrow.names)
                columns = self._columns(names, "")
                n = 0
                for batch in table.iter_batches(columns=list(columns)):
                    for record in batch.to_pylist():
                        n += 1
                        yield f"row {n}", {columns[k]: v for k, v in record.items()}
        except (OSError, pa.ArrowException) as exc:
            raise UsageError(f"URL list {self.name}: not a readable Parquet file ({exc})") from exc


def _key(url: str) -> str:
    """What two spellings of one URL have in common: scheme and host in lower case, without
    the fragment (which is not sent to the server)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
