"""Sources of candidate images, looked up by kind in ``SOURCES``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from datasetagent.registry import Registry
from datasetagent.spec import DatasetSpec, SourceSpec

if TYPE_CHECKING:  # the store is not needed to find files (``scan`` starts faster without it)
    from datasetagent.store import Candidate


class Source(Protocol):
    """Offers candidates and reads their bytes. Instances must pickle (workers read files)."""

    kind: str

    def candidates(self) -> Iterator[Candidate]: ...

    def read(self, location: str) -> bytes: ...


@runtime_checkable
class SkipsFiles(Protocol):
    """A source that leaves files out of its listing (links out of its folder, FIFOs)."""

    def skip_messages(self) -> list[str]: ...


def skip_messages(sources: Iterable[object]) -> list[str]:
    """What the ``sources`` left out of their last listing, one line per source and reason."""
    return [line for s in sources if isinstance(s, SkipsFiles) for line in s.skip_messages()]


SourceFactory = Callable[[SourceSpec, DatasetSpec], Source]

SOURCES: Registry[SourceFactory] = Registry("source", "datasetagent.sources")


def open_source(source: SourceSpec, spec: DatasetSpec) -> Source:
    _load_builtins()
    return SOURCES.get(source.kind)(source, spec)


def _load_builtins() -> None:
    from datasetagent.sources import local, urls  # noqa: F401  (register themselves)
