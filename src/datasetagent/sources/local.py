"""Local folders: flat, or one sub-folder per class."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from datasetagent.errors import UsageError
from datasetagent.sources import SOURCES
from datasetagent.sources.files import image_files, read_regular, skip_messages
from datasetagent.spec import USER_SUPPLIED, DatasetSpec, SourceSpec
from datasetagent.store import Candidate

log = logging.getLogger(__name__)


def read_file(location: str) -> bytes:
    """The bytes of a listed file (a regular file only: see ``files.read_regular``)."""
    return read_regular(location)


@SOURCES.register("local")
class LocalFolder:
    """Every image file under a folder.

    A file inside a first-level sub-folder whose name matches a class (by name or synonym,
    ignoring case, separators and plural ``s``) carries that class as its source label; files at
    the top level or in other folders carry none and must be labelled by a model or seed set.
    Symbolic links out of the folder and what is not a regular file are skipped, counted by
    reason in ``skipped`` as the candidates are listed (``skip_messages`` says so).
    """

    kind = "local"

    def __init__(self, source: SourceSpec, spec: DatasetSpec) -> None:
        self.root = Path(source.location).expanduser()
        if not self.root.is_dir():
            what = "does not exist" if not self.root.exists() else "is not a folder"
            raise UsageError(f"source folder {self.root} {what}; pass a folder of images")
        self.skipped: Counter[str] = Counter()
        self._class_of_folder: dict[str, str | None] = {}
        for child in self.root.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                self._class_of_folder[child.name] = spec.resolve_class(child.name)
        unmatched = sorted(k for k, v in self._class_of_folder.items() if v is None)
        if unmatched:
            log.info("folders in %s that name no class: %s", self.root, ", ".join(unmatched))

    def candidates(self) -> Iterator[Candidate]:
        self.skipped = Counter()
        for path in image_files(self.root, on_skip=lambda _, why: self.skipped.update([why])):
            rel = path.relative_to(self.root)
            hint = self._class_of_folder.get(rel.parts[0]) if len(rel.parts) > 1 else None
            yield Candidate(
                source_kind=self.kind,
                location=str(path.resolve()),
                class_hint=hint,
                licence=USER_SUPPLIED,
                origin="collected",
            )

    def skip_messages(self) -> list[str]:
        return skip_messages(self.root, self.skipped)

    def read(self, location: str) -> bytes:
        return read_file(location)
