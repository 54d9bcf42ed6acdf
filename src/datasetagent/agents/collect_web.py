"""Image Processing's collect step for the web: searches and downloads.

* ``search``: before a round takes its candidates, the classes still short are searched for
  on every web search source (Openverse, Wikimedia Commons). Each class has its queries — its
  name, synonyms and prompt — rotated and paged (the page cursor is stored, so a resumed run
  goes on where it stopped); every result becomes a candidate whose class hint is the class
  searched for (a weak label, as a class folder is) and whose ``web.query`` names the search.
  A query whose results mostly end rejected or disputed is stopped (``review_queries``).
* ``download``: the round's web candidates (searched or from a URL list) are fetched, through
  the guarded client (``web.http``), into ``RUN/downloads`` before processing reads them. A
  licence the policy refuses is rejected before any byte is fetched; a failed download is a
  rejection with its reason. A candidate already downloaded is never fetched again, so a run
  killed and resumed refetches nothing; the files go once the round is processed.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from datasetagent.errors import SourceError
from datasetagent.records import Rejection
from datasetagent.sources.downloads import download_name, stored_size
from datasetagent.sources.websearch import WebSearch, host_limits
from datasetagent.spec import DatasetSpec
from datasetagent.store import Candidate, RunStore, SearchQuery
from datasetagent.web.guard import AddressPolicy
from datasetagent.web.http import Fetched, FetchError, Limits, WebClient, fetch_all, user_agent

#: Source kinds whose candidates are URLs, downloaded before processing.
WEB_KINDS = frozenset({"openverse", "wikimedia", "urls"})
#: The folder of the run where downloads wait for processing.
DOWNLOADS = "downloads"
#: At most this many search requests per class in one round.
MAX_REQUESTS_PER_CLASS = 12
#: A query is stopped once this many of its results were processed and, of them, more than
#: ``POOR_SHARE`` ended rejected or disputed.
POOR_AFTER = 12
POOR_SHARE = 0.7


def class_queries(spec: DatasetSpec, name: str) -> list[str]:
    """The texts one class is searched for: its name, its synonyms, then its prompt, each once
    (compared case-folded)."""
    cls = next(c for c in spec.classes if c.name == name)
    seen: set[str] = set()
    out: list[str] = []
    for text in (*cls.all_names(), cls.prompt):
        text = " ".join(text.split())
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


class WebCollector:
    """Searches and downloads for one run; every outcome is stored as it happens."""

    def __init__(
        self,
        store: RunStore,
        spec: DatasetSpec,
        run_dir: Path,
        searches: Sequence[WebSearch],
        policy: AddressPolicy,
        *,
        note: Callable[[str], None] = lambda _: None,
        progress: Callable[[int], None] = lambda _: None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.searches = list(searches)
        self.policy = policy
        self.folder = run_dir / DOWNLOADS
        self.note = note
        self.progress = progress
        self.limits = limits or Limits(host_limits=host_limits(self.searches))
        #: Images the last ``download`` fetched, per class.
        self.per_class: Counter[str] = Counter()
        #: Sources whose API failed this process, with why: not asked again until a resume.
        self.failed: dict[str, str] = {}
        #: The positions each query's pages handed out in this process (a loop is stopped).
        self._positions: dict[tuple[str, str, str], set[str]] = {}
        self._described = False

    def _client(self) -> WebClient:
        return WebClient(self.policy, user_agent=user_agent(), limits=self.limits)

    # -- searching -----------------------------------------------------------------------------
    def search(self, wanted: dict[str, int]) -> Counter[str]:
        """Search until each class in ``wanted`` has that many new candidates or its queries
        run out; returns the new candidates per class (and ``requests``)."""
        if not self.searches or not any(n > 0 for n in wanted.values()):
            return Counter()
        if not self._described:
            for search in self.searches:
                self.note(search.describe())
            self._described = True
        found = asyncio.run(self._search(wanted))
        return found

    async def _search(self, wanted: dict[str, int]) -> Counter[str]:
        found: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        async with self._client() as client:
            for name, need in wanted.items():
                if need <= 0:
                    continue
                requests = 0
                while found[name] < need and requests < MAX_REQUESTS_PER_CLASS:
                    open_ = self._open_queries(name)
                    if not open_:
                        break
                    q = min(open_, key=lambda q: (q.sent, open_.index(q)))
                    search = next(s for s in self.searches if s.kind == q.source)
                    requests += 1
                    found["requests"] += 1
                    try:
                        page = await search.search(client, q.text, q.cursor)
                    except FetchError as exc:
                        self.failed[q.source] = f"{exc.reason}: {exc.detail}"
                        self.note(
                            f"{q.source}: search failed ({exc}); not asked again by this "
                            "process (build --resume asks again)"
                        )
                        continue
                    except SourceError as exc:  # this query's own state (a damaged cursor)
                        why = str(exc)
                        self.store.save_query(q.model_copy(update={"done": True, "why": why}))
                        self.note(f"{q.source} query {q.text!r} for {name} stopped: {why}")
                        continue
                    tag = f"{q.source}:{q.text}"
                    cands = [
                        c.model_copy(
                            update={
                                "class_hint": name,
                                "web": (c.web.model_copy(update={"query": tag}) if c.web else None),
                            }
                        )
                        for c in page.results
                    ]
                    new = self.store.add_candidates(cands)
                    found[name] += new
                    found["results"] += len(page.results)
                    dropped.update(page.dropped)
                    end = self._end_of(q, page.cursor)
                    self.store.save_query(
                        q.model_copy(
                            update={
                                "cursor": page.cursor,
                                "done": end is not None,
                                "why": end,
                                "sent": q.sent + 1,
                                "seen": q.seen + len(page.results),
                            }
                        )
                    )
        if found or dropped:
            per_class = ", ".join(f"{c} {found[c]}" for c in wanted if wanted[c] > 0)
            left = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
            self.note(
                f"web search: {found['requests']} requests, {found['results']} results, new "
                f"candidates: {per_class}" + (f"; left out before download: {left}" if left else "")
            )
        return found

    def _end_of(self, q: SearchQuery, cursor: str | None) -> str | None:
        """Why ``q`` has no next page at ``cursor`` (None: it has one). A position the API gave
        before for this query ends it: asked again, it would answer the same pages forever."""
        if cursor is None:
            return "no more results"
        seen = self._positions.setdefault((q.source, q.class_name, q.text), set())
        if q.cursor is not None:
            seen.add(q.cursor)
        if cursor in seen:
            return "the API led back to a position it gave before (its paging loops)"
        seen.add(cursor)
        return None

    def _open_queries(self, name: str) -> list[SearchQuery]:
        out = []
        for search in self.searches:
            if search.kind in self.failed:
                continue
            for text in class_queries(self.spec, name):
                q = self.store.query(search.kind, name, text)
                if not q.done:
                    out.append(q)
        return out

    def can_search(self, names: Sequence[str]) -> bool:
        """Whether a search of some source is still open for one of these classes."""
        return any(self._open_queries(name) for name in names)

    def review_queries(self) -> list[str]:
        """Stop the queries that bring mostly rejects or disputes; one line per query stopped."""
        yields = self.store.query_yields()
        lines = []
        for q in self.store.queries():
            if q.done:
                continue
            got = yields.get(f"{q.source}:{q.text}", Counter())
            ended = got["kept"] + got["rejected"] + got["disputed"]
            poor = got["rejected"] + got["disputed"]
            if ended >= POOR_AFTER and poor > POOR_SHARE * ended:
                why = f"{poor} of {ended} results rejected or disputed"
                self.store.save_query(q.model_copy(update={"done": True, "why": why}))
                lines.append(f"{q.source} query {q.text!r} for {q.class_name} stopped: {why}")
        return lines

    # -- downloading ---------------------------------------------------------------------------
    def download(self, round_: int) -> Counter[str]:
        """Fetch the round's web candidates not downloaded yet; returns outcome counts."""
        todo = [c for c in self.store.candidates_to_process(round_) if c.source_kind in WEB_KINDS]
        done = self.store.downloads(round_)
        outcomes: Counter[str] = Counter()
        fetch: list[Candidate] = []
        for cand in todo:
            if cand.id in done:
                outcomes["already downloaded"] += 1
                continue
            why = self.spec.licences.refusal(cand.licence)
            if why is not None:
                self._reject(cand, round_, "licence", why)
                outcomes["licence"] += 1
                continue
            path = self.folder / download_name(cand.location)
            size = stored_size(path)
            if size is not None:  # stored before a kill, not yet recorded: not fetched again
                self.store.record_download(cand.id, cand.location, path.name, size)
                outcomes["already downloaded"] += 1
                continue
            if path.is_dir() and not path.is_symlink():  # not ours, and nothing replaces it
                detail = f"{path} is a folder this tool did not make; remove it and resume"
                self._reject(cand, round_, "download-path", detail)
                outcomes["download-path"] += 1
                continue
            fetch.append(cand)
        self.per_class = Counter()
        if fetch:
            self.folder.mkdir(parents=True, exist_ok=True)
            outcomes.update(asyncio.run(self._download(fetch, round_)))
        return outcomes

    async def _download(self, cands: list[Candidate], round_: int) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        by_id = {c.id: c for c in cands}
        async with self._client() as client:
            async for key, result in fetch_all(client, ((c.id, c.location) for c in cands)):
                cand = by_id[key]
                if isinstance(result, Fetched):
                    self._save(cand, result)
                    outcomes["downloaded"] += 1
                    self.per_class[cand.class_hint or "no class"] += 1
                else:
                    self._reject(cand, round_, result.reason, str(result))
                    outcomes[result.reason] += 1
                self.progress(1)
        return outcomes

    def _save(self, cand: Candidate, got: Fetched) -> None:
        name = download_name(cand.location)
        tmp = self.folder / f".{name}.part"
        tmp.unlink(missing_ok=True)  # a kill's leftover, or a link planted to be written through
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(tmp, flags, 0o644), "wb") as f:
            f.write(got.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        self.store.record_download(cand.id, got.url, name, len(got.data))

    def _reject(self, cand: Candidate, round_: int, reason: str, detail: str) -> None:
        rejection = Rejection(
            location=cand.location, source_kind=cand.source_kind, reasons=(reason,), detail=detail
        )
        self.store.record_outcome(cand.id, round_, rejection)

    def clean(self, round_: int) -> None:
        """Remove the round's downloads once it is processed (its samples hold the bytes)."""
        for _, name in self.store.downloads(round_).values():
            (self.folder / name).unlink(missing_ok=True)


def address_policy(hosts: Sequence[str]) -> AddressPolicy:
    """The guard's policy with the ``--allow-host HOST[:PORT]`` exceptions given."""
    return AddressPolicy.from_allow_hosts(hosts)
