"""Hugging Face ``datasets``: Parquet files ``data/SPLIT-00000-of-00001.parquet`` (splits
``train``, ``validation``, ``test``) with the images embedded, and a YAML header on the data
card naming them, so ``load_dataset(FOLDER)`` and ``load_dataset("parquet", data_files=...)``
both read it with its features.

Columns: ``image`` (``Image``), ``id``, then by task ``label`` (``ClassLabel``) or ``width``,
``height`` and ``objects``: a dict of lists, one entry per object, with ``bbox`` (COCO
``[x, y, w, h]`` in pixels), ``category`` (``ClassLabel``), ``area`` and for segmentation
``rle`` (the COCO compressed RLE string of the mask, of the image's size). Then the image's
``source`` (the file, or the URL fetched), ``creator``, ``licence``, ``licence_url``, ``page``
(the page it is shown on) and ``title``, null where unknown. The features are stored in the
Parquet schema's ``huggingface`` metadata, the way ``datasets`` writes them itself.

Rows are written a row group at a time (:data:`ROWS_PER_GROUP` images, or fewer when their
bytes pass :data:`BYTES_PER_GROUP`), so memory stays bounded.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import yaml

from datasetagent.errors import ExportError
from datasetagent.formats import install_hint
from datasetagent.records import Box, Mask, Sample
from datasetagent.spec import SPLIT_NAMES, DatasetSpec, SplitName, TaskKind

ROWS_PER_GROUP = 100  # as `datasets` writes image datasets
BYTES_PER_GROUP = 32 << 20
#: Columns worth dictionary encoding (repeated strings); never the image bytes.
DICTIONARY_COLUMNS = ["creator", "licence", "licence_url"]
#: Our split names and the ones Hugging Face uses.
HF_SPLITS: dict[SplitName, str] = {"train": "train", "val": "validation", "test": "test"}
TASK_CATEGORIES: dict[TaskKind, str] = {
    "classification": "image-classification",
    "detection": "object-detection",
    "segmentation": "image-segmentation",
}
PROVENANCE_COLUMNS = ("source", "creator", "licence", "licence_url", "page", "title")


def _arrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet (untyped), or an error that says how to install them."""
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise ExportError(f"the hf format needs pyarrow: {install_hint('hf')}") from exc
    return pa, pq


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def hf_features(spec: DatasetSpec) -> dict[str, Any]:
    """The ``datasets`` features of the export, as ``Features.to_dict()`` writes them."""
    names = list(spec.class_names)
    features: dict[str, Any] = {"image": {"_type": "Image"}, "id": _value("string")}
    if spec.task == "classification":
        features["label"] = {"names": names, "_type": "ClassLabel"}
    else:
        objects: dict[str, Any] = {
            "bbox": {"feature": _value("float64"), "length": 4, "_type": "Sequence"},
            "category": {"names": names, "_type": "ClassLabel"},
            "area": _value("float64"),
        }
        if spec.task == "segmentation":
            objects["rle"] = _value("string")
        features |= {
            "width": _value("int32"),
            "height": _value("int32"),
            "objects": {"feature": objects, "_type": "Sequence"},
        }
    return features | {name: _value("string") for name in PROVENANCE_COLUMNS}


def arrow_schema(spec: DatasetSpec) -> Any:
    pa, _ = _arrow()
    fields = [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("id", pa.string()),
    ]
    if spec.task == "classification":
        fields.append(("label", pa.int64()))
    else:
        objects = [
            ("bbox", pa.list_(pa.list_(pa.float64(), 4))),
            ("category", pa.list_(pa.int64())),
            ("area", pa.list_(pa.float64())),
        ]
        if spec.task == "segmentation":
            objects.append(("rle", pa.list_(pa.string())))
        fields += [("width", pa.int32()), ("height", pa.int32()), ("objects", pa.struct(objects))]
    fields += [(name, pa.string()) for name in PROVENANCE_COLUMNS]
    meta = {"huggingface": json.dumps({"info": {"features": hf_features(spec)}})}
    return pa.schema(fields, metadata=meta)


def split_file(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


class HfExporter:
    format = "hf"

    def __init__(self, out: Path, spec: DatasetSpec) -> None:
        self.out = out
        self.spec = spec
        self.schema = arrow_schema(spec)
        self.index = {name: i for i, name in enumerate(spec.class_names)}
        self._writers: dict[str, Any] = {}  # pyarrow.parquet.ParquetWriter
        self._rows: dict[str, list[dict[str, Any]]] = {}
        #: Rows written per split so far: a manifest entry is ``FILE.parquet#ROW``, the
        #: location the importer reads an image at.
        self._written: dict[str, int] = {}
        self._bytes: dict[str, int] = {}

    def __enter__(self) -> HfExporter:
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        return self

    def _row(self, sample: Sample, image: Path) -> dict[str, Any]:
        name = f"{sample.id[:16]}{image.suffix}"
        row: dict[str, Any] = {
            "image": {"bytes": image.read_bytes(), "path": name},
            "id": sample.id,
        }
        if self.spec.task == "classification":
            if sample.label is None:
                raise ExportError(f"sample {sample.id[:12]} has no label")
            row["label"] = self.index[sample.label]
        else:
            from datasetagent.export.coco import coco_annotation

            objects: dict[str, list[Any]] = {"bbox": [], "category": [], "area": []}
            if self.spec.task == "segmentation":
                objects["rle"] = []
            for ann in sample.annotations:
                if not isinstance(ann, Box | Mask):
                    continue
                fields = coco_annotation(ann)
                objects["bbox"].append(fields["bbox"])
                objects["category"].append(self.index[ann.label])
                objects["area"].append(fields["area"])
                if "rle" in objects:
                    objects["rle"].append(ann.rle.counts if isinstance(ann, Mask) else None)
            row |= {"width": sample.width, "height": sample.height, "objects": objects}
        prov = sample.provenance
        return row | {
            "source": prov.location,
            "creator": prov.creator,
            "licence": prov.licence,
            "licence_url": prov.licence_url,
            "page": prov.page,
            "title": prov.title,
        }

    def write(self, sample: Sample, image: Path) -> str:
        if sample.split is None:
            raise ExportError(f"sample {sample.id[:12]} has no split")
        split = HF_SPLITS[sample.split]
        rows = self._rows.setdefault(split, [])
        row = self._row(sample, image)
        rows.append(row)
        number = self._written.get(split, 0)
        self._written[split] = number + 1
        self._bytes[split] = self._bytes.get(split, 0) + len(row["image"]["bytes"])
        if len(rows) >= ROWS_PER_GROUP or self._bytes[split] >= BYTES_PER_GROUP:
            self._flush(split)
        return f"{split_file(split)}#{number}"

    def _flush(self, split: str) -> None:
        pa, pq = _arrow()
        rows = self._rows.get(split)
        if not rows:
            return
        writer = self._writers.get(split)
        if writer is None:
            writer = pq.ParquetWriter(
                self.out / split_file(split), self.schema, use_dictionary=DICTIONARY_COLUMNS
            )
            self._writers[split] = writer
        writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self._rows[split] = []
        self._bytes[split] = 0

    def __exit__(self, *exc: object) -> None:
        try:
            if not exc or exc[0] is None:
                for split in list(self._rows):
                    self._flush(split)
        finally:
            for writer in self._writers.values():
                writer.close()

    def card_header(self) -> str:
        """The YAML front matter that tells ``datasets`` the splits and their files."""
        present = [HF_SPLITS[s] for s in SPLIT_NAMES if HF_SPLITS[s] in self._writers]
        meta = {
            "task_categories": [TASK_CATEGORIES[self.spec.task]],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in present],
                }
            ],
        }
        return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"
