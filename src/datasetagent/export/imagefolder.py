"""ImageFolder: ``SPLIT/CLASS/IMAGE`` folders, read by torchvision, Keras and ``datasets``."""

from __future__ import annotations

from pathlib import Path

from datasetagent.errors import ExportError
from datasetagent.export import copy_image
from datasetagent.records import Sample
from datasetagent.spec import DatasetSpec


class ImageFolderExporter:
    format = "imagefolder"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        self.out = out

    def __enter__(self) -> ImageFolderExporter:
        self.out.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, sample: Sample, image: Path) -> str:
        if sample.label is None or sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no label or split")
        return copy_image(self.out, Path(sample.split) / sample.label, sample, image).as_posix()
