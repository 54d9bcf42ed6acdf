"""An existing labelled dataset in ImageFolder layout, to be expanded.

Accepted layouts: ``ROOT/CLASS/*`` or ``ROOT/SPLIT/CLASS/*`` with SPLIT among train, val
(also ``valid``, ``validation``) and test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from datasetagent.errors import UsageError
from datasetagent.sources.files import image_files
from datasetagent.sources.local import read_file
from datasetagent.spec import USER_SUPPLIED, ColorMode, DatasetProfile, SplitName
from datasetagent.store import Candidate

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


class ImageFolderDataset:
    kind = "existing"

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path).expanduser()
        if not self.root.is_dir():
            raise UsageError(
                f"existing dataset {self.root} is not a folder; pass a folder laid out as "
                "CLASS/image or SPLIT/CLASS/image"
            )
        subdirs = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_ALIASES]
        self._split_layout = bool(split_dirs) and len(split_dirs) == len(subdirs)
        # (folder, class name, split)
        self._class_dirs: list[tuple[Path, str, SplitName | None]] = []
        if self._split_layout:
            for split_dir in split_dirs:
                split = SPLIT_ALIASES[split_dir.name.lower()]
                for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                    if not class_dir.name.startswith("."):
                        self._class_dirs.append((class_dir, class_dir.name, split))
        else:
            self._class_dirs = [(p, p.name, None) for p in subdirs]
        if not self._class_dirs:
            raise UsageError(
                f"existing dataset {self.root} has no class folders; expected CLASS/image or "
                "SPLIT/CLASS/image"
            )

    def candidates(self) -> Iterator[Candidate]:
        for folder, name, split in self._class_dirs:
            for path in image_files(folder):
                yield Candidate(
                    source_kind=self.kind,
                    location=str(path.resolve()),
                    class_hint=name,
                    licence=USER_SUPPLIED,
                    origin="existing",
                    split_hint=split,
                )

    def read(self, location: str) -> bytes:
        return read_file(location)

    def profile(self) -> DatasetProfile:
        """Class counts, splits, sizes and colour mode, read from file headers only."""
        classes: Counter[str] = Counter()
        splits: Counter[str] = Counter()
        sizes: Counter[tuple[int, int]] = Counter()
        modes: Counter[str] = Counter()
        for cand in self.candidates():
            try:
                with Image.open(cand.location) as img:
                    sizes[img.size] += 1
                    modes[img.mode] += 1
            except (OSError, ValueError, SyntaxError):
                continue  # a broken file is reported when the run processes it
            classes[cand.class_hint or ""] += 1
            if cand.split_hint:
                splits[cand.split_hint] += 1
        if not sizes:
            raise UsageError(f"existing dataset {self.root} holds no readable images")
        color: ColorMode = "L" if all(m in ("L", "1", "I;16", "I") for m in modes) else "RGB"
        return DatasetProfile(
            path=str(self.root),
            class_counts={name: classes.get(name, 0) for _, name, _ in self._class_dirs},
            split_counts=dict(splits),
            common_size=next(iter(sizes)) if len(sizes) == 1 else None,
            min_side=min(min(s) for s in sizes),
            color_mode=color,
        )
