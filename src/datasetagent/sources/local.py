"""Local folders: flat, or one sub-folder per class."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from datasetagent.errors import UsageError
from datasetagent.sources import SOURCES
from datasetagent.sources.files import image_files
from datasetagent.spec import USER_SUPPLIED, DatasetSpec, SourceSpec
from datasetagent.store import Candidate

log = logging.getLogger(__name__)


def read_file(location: str) -> bytes:
    return Path(location).read_bytes()


@SOURCES.register("local")
class LocalFolder:
    """Every image file under a folder.

    A file inside a first-level sub-folder whose name matches a class (by name or synonym,
    ignoring case, separators and plural ``s``) carries that class as its source label; files at
    the top level or in other folders carry none and must be labelled by a model or seed set.
    """

    kind = "local"

    def __init__(self, source: SourceSpec, spec: DatasetSpec) -> None:
        self.root = Path(source.location).expanduser()
        if not self.root.is_dir():
            what = "does not exist" if not self.root.exists() else "is not a folder"
            raise UsageError(f"source folder {self.root} {what}; pass a folder of images")
        self._class_of_folder: dict[str, str | None] = {}
        for child in self.root.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                self._class_of_folder[child.name] = spec.resolve_class(child.name)
        unmatched = sorted(k for k, v in self._class_of_folder.items() if v is None)
        if unmatched:
            log.info("folders in %s that name no class: %s", self.root, ", ".join(unmatched))

    def candidates(self) -> Iterator[Candidate]:
        for path in image_files(self.root):
            rel = path.relative_to(self.root)
            hint = self._class_of_folder.get(rel.parts[0]) if len(rel.parts) > 1 else None
            yield Candidate(
                source_kind=self.kind,
                location=str(path.resolve()),
                class_hint=hint,
                licence=USER_SUPPLIED,
                origin="collected",
            )

    def read(self, location: str) -> bytes:
        return read_file(location)
