"""Web provenance (the URL fetched, the page, the licence's URL, the title, the creator) in
every export: the manifest, ATTRIBUTION.md (escaped: text from the web cannot break its table
or add links), LICENSES.md, the data card's licence mix, CSV, Hugging Face and COCO columns,
and back again through the importers."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from datasetagent.export import export_samples
from datasetagent.export.attribution import md_link, md_text
from datasetagent.formats import descriptors
from datasetagent.records import Provenance, Sample
from datasetagent.sources.existing import open_existing
from datasetagent.spec import LicencePolicy, TaskKind
from export_data import blob_path, make_samples, spec_for

#: A title written to break a Markdown table, add a link and inject HTML.
NASTY_TITLE = "Cat | on [a mat](javascript:alert(1)) <img src=x onerror=alert(1)>\nsecond `line`"
BY_SA = "https://creativecommons.org/licenses/by-sa/4.0/"
DE_URL = "https://creativecommons.org/licenses/by-sa/3.0/de/"
TERMS_URL = "https://photos.example/terms?id=7&lang=en"

#: (source kind, location, licence, licence URL, page, title, creator) of each sample.
WEB: list[tuple[str, str, str, str | None, str | None, str | None, str | None]] = [
    ("urls", "https://img.example/a.jpg", "CC-BY-SA-4.0", None,
     "https://photos.example/a", NASTY_TITLE, "=HYPERLINK(\"x\") | Ann"),
    ("openverse", "https://img.example/b_c.jpg", "CC-BY-SA-3.0-DE", DE_URL,
     "https://photos.example/b", "Traffic light (Köln)", "Bob"),
    ("wikimedia", "https://upload.example/c.png", "unknown", TERMS_URL,
     None, "A title with no page", None),
    ("urls", "https://img.example/d.jpg", "user-supplied", None, None, None, None),
    ("local", "/data/cats/e.png", "user-supplied", None, None, None, None),
    ("openverse", "https://img.example/f.jpg", "CC-BY-SA-4.0", BY_SA,
     "https://photos.example/f", "F", "Fay"),
]  # fmt: skip

#: Each format with the first task it holds.
FORMATS = [(d.name, sorted(d.tasks)[0]) for d in descriptors()]


def web_samples(root: Path, task: TaskKind) -> list[Sample]:
    """Samples whose provenance is ``WEB``'s."""
    items = make_samples(root, task, n=len(WEB))
    out = []
    for sample, (kind, location, licence, url, page, title, creator) in zip(
        items, WEB, strict=True
    ):
        prov = Provenance(
            source_kind=kind,
            location=location,
            licence=licence,
            licence_url=url,
            page=page,
            title=title,
            creator=creator,
        )
        out.append(sample.model_copy(update={"provenance": prov}))
    return sorted(out, key=lambda s: s.id)


def export(fmt: str, task: TaskKind, items: list[Sample], out: Path, **policy: Any) -> Path:
    spec = spec_for(task, fmt).model_copy(update={"licences": LicencePolicy(**policy)})
    return export_samples(fmt, out / fmt, spec, items, blob_path, None)


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row, split at the pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return {line["id"]: line for line in lines}


# -- the manifest and the attribution files --------------------------------------------------------
@pytest.mark.parametrize(("fmt", "task"), FORMATS)
def test_every_export_shows_the_web_provenance(tmp_path: Path, fmt: str, task: TaskKind) -> None:
    items = web_samples(tmp_path / "img", task)
    out = export(fmt, task, items, tmp_path)
    lines = manifest(out)
    rows = {
        cells(r)[0]: cells(r)
        for r in (out / "ATTRIBUTION.md").read_text().splitlines()
        if r.startswith("| ") and not r.startswith("| file ")
    }
    assert len(rows) == len(items)
    for sample in items:
        prov = sample.provenance
        line = lines[sample.id]["provenance"]
        # every key, null where unknown
        assert {k: line[k] for k in ("location", "page", "licence_url", "title", "creator")} == {
            "location": prov.location,
            "page": prov.page,
            "licence_url": prov.licence_url,
            "title": prov.title,
            "creator": prov.creator,
        }
        row = rows[md_text(lines[sample.id]["file"])]
        assert len(row) == 6  # file, title, creator, licence, source, changes
        assert row[1] == md_link(prov.title, prov.page)
        assert row[2] == (md_text(prov.creator) or "unknown")
        assert row[4] == md_link(prov.location, prov.location)
    by_location = {r[4]: r for r in rows.values()}
    nasty = by_location["[https://img.example/a.jpg](https://img.example/a.jpg)"]
    assert nasty[1] == (
        r"[Cat \| on \[a mat\](javascript:alert(1)) \<img src=x onerror=alert(1)\> second "
        r"\`line\`](https://photos.example/a)"
    )
    assert nasty[2] == r'=HYPERLINK("x") \| Ann'
    assert nasty[3] == f"[CC-BY-SA-4.0]({BY_SA})"  # the canonical deed: the row gave no URL
    assert by_location["[https://img.example/b_c.jpg](https://img.example/b_c.jpg)"][1:4] == [
        "[Traffic light (Köln)](https://photos.example/b)",
        "Bob",
        f"[CC-BY-SA-3.0-DE]({DE_URL})",
    ]
    no_page = by_location["[https://upload.example/c.png](https://upload.example/c.png)"]
    assert no_page[1:4] == ["A title with no page", "unknown", f"[unknown]({TERMS_URL})"]
    local = by_location["/data/cats/e.png"]  # a file: no link
    assert local[1:4] == ["", "unknown", "user-supplied"]

    licences = {
        cells(r)[0]: cells(r)[1:]
        for r in (out / "LICENSES.md").read_text().splitlines()
        if r.startswith("| ") and not r.startswith("| licence ")
    }
    assert licences["CC-BY-SA-4.0"][:2] == ["2", BY_SA]
    assert licences["CC-BY-SA-3.0-DE"][:2] == ["1", DE_URL]  # the ported deed
    assert licences["unknown"][:2] == ["1", TERMS_URL]
    assert licences["unknown"][2].startswith("not recognised")
    assert licences["user-supplied"][:2] == ["2", ""]
    assert licences["user-supplied"][2].startswith("supplied by the user")
    assert "share adaptations under the same licence" in licences["CC-BY-SA-3.0-DE"][2]


def test_markdown_cells_cannot_break_the_table_or_link() -> None:
    assert md_text("a | b\r\nc\u2028d") == r"a \| b c d"
    assert md_text("<script>x</script> [t](u) `c` *e* ~~s~~") == (
        r"\<script\>x\</script\> \[t\](u) \`c\` \*e\* \~\~s\~\~"
    )
    assert md_text("file_name_1.png") == "file_name_1.png"  # readable as it is
    # bidi controls would show a creator's or title's text reordered ("gpj.exe" as "exe.jpg"),
    # written as they are or as a character reference a Markdown viewer decodes
    assert md_text("Ann\u202egpj.exe\u202c \u2066x\u2069\u200f") == "Anngpj.exe x"
    assert md_text("a&#x202E;b &#8238;c &rlo; d &amp; e & f") == (
        r"a\&#x202E;b \&#8238;c \&rlo; d \&amp; e & f"
    )
    assert md_link("page", "javascript:alert(1)") == "page"  # only http(s) is linked
    assert md_link(None, "data:text/html,x") == "data:text/html,x"
    assert (
        md_link("t", "https://e.org/a (b)|c<d>`e")
        == "[t](https://e.org/a%20%28b%29%7Cc%3Cd%3E%60e)"
    )
    assert md_link("t", "https://e.org/a\nb") == "[t](https://e.org/ab)"


# -- the data card -----------------------------------------------------------------------------
def test_the_data_card_gives_the_licence_mix_and_policy(tmp_path: Path) -> None:
    items = web_samples(tmp_path / "img", "classification")
    card = export("csv", "classification", items, tmp_path, allow_nc=True) / "README.md"
    text = card.read_text()
    assert "Licence policy: `open + NC`" in text
    section = text.split("## Sources and licences")[1].split("## The spec")[0]
    rows = [cells(r) for r in section.splitlines() if r.startswith("| ")]
    licence_rows = {r[0]: r[1:3] for r in rows if len(r) == 4}
    assert licence_rows == {
        "licence": ["images", "share"],
        f"[CC-BY-SA-4.0]({BY_SA})": ["2", "33.3%"],
        "user-supplied": ["2", "33.3%"],
        f"[CC-BY-SA-3.0-DE]({DE_URL})": ["1", "16.7%"],
        "unknown": ["1", "16.7%"],
    }
    source_rows = {r[0]: r[1:] for r in rows if len(r) == 3 and r[2].endswith("%")}
    assert source_rows == {
        "openverse": ["2", "33.3%"],
        "urls": ["2", "33.3%"],
        "local": ["1", "16.7%"],
        "wikimedia": ["1", "16.7%"],
    }
    assert ["urls", "CC-BY-SA-4.0", "1"] in rows  # per source and licence


# -- CSV, Hugging Face and COCO columns ------------------------------------------------------------
def test_csv_rows_carry_page_licence_url_and_title(tmp_path: Path) -> None:
    items = web_samples(tmp_path / "img", "classification")
    out = export("csv", "classification", items, tmp_path)
    with (out / "labels.csv").open(encoding="utf-8", newline="") as fh:
        rows = {r["source"]: r for r in csv.DictReader(fh)}
    for sample in items:
        prov = sample.provenance
        row = rows[prov.location]
        assert (row["licence"], row["licence_url"], row["page"], row["title"]) == (
            prov.licence,
            prov.licence_url or "",
            prov.page or "",
            prov.title or "",
        )
    assert rows["https://img.example/a.jpg"]["creator"].startswith("'=HYPERLINK")  # as text


def test_hf_rows_carry_page_licence_url_and_title(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    items = web_samples(tmp_path / "img", "detection")
    out = export("hf", "detection", items, tmp_path)
    rows = {
        r["id"]: r
        for path in (out / "data").glob("*.parquet")
        for r in pq.read_table(path).to_pylist()
    }
    for sample in items:
        prov = sample.provenance
        row = rows[sample.id]
        assert (row["source"], row["licence"], row["licence_url"], row["page"], row["title"]) == (
            prov.location,
            prov.licence,
            prov.licence_url,
            prov.page,
            prov.title,
        )
        assert row["creator"] == prov.creator


def test_coco_names_licences_with_urls_and_images_with_their_page(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    items = web_samples(tmp_path / "img", "detection")
    out = export("coco", "detection", items, tmp_path)
    by_source: dict[str, dict[str, Any]] = {}
    licences: dict[tuple[str, str], int] = {}
    for path in sorted((out / "annotations").glob("instances_*.json")):
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it loads
            coco = COCO(str(path))  # a valid COCO file for pycocotools
        data = coco.dataset
        names = {lic["id"]: (lic["name"], lic["url"]) for lic in data["licenses"]}
        for img in data["images"]:
            by_source[img["source"]] = img
            licences[names[img["license"]]] = licences.get(names[img["license"]], 0) + 1
    for sample in items:
        prov = sample.provenance
        img = by_source[prov.location]
        assert (img["page"], img["title"], img["creator"]) == (prov.page, prov.title, prov.creator)
    assert licences == {
        ("CC-BY-SA-4.0", BY_SA): 2,  # the canonical deed, given or not
        ("CC-BY-SA-3.0-DE", DE_URL): 1,
        ("unknown", TERMS_URL): 1,
        ("user-supplied", ""): 2,
    }


# -- the round trip --------------------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "task"), FORMATS)
def test_importing_an_export_restores_the_web_provenance(
    tmp_path: Path, fmt: str, task: TaskKind
) -> None:
    items = web_samples(tmp_path / "img", task)
    out = export(fmt, task, items, tmp_path)
    dataset = open_existing(out)
    want = {s.provenance.location: s.provenance for s in items}
    restored = 0
    for img in dataset.images():
        assert img.source is not None
        prov = want[img.source]
        assert (img.page, img.licence_url, img.title, img.creator, img.licence) == (
            prov.page,
            prov.licence_url,
            prov.title,
            prov.creator,
            prov.licence,
        )
        # what the build makes of it: the processed image's provenance names the original
        data = dataset.read(img.location)
        with Image.open(io.BytesIO(data)) as pic:
            width, height = pic.size
        read = Sample(
            id="0" * 64,
            blob=img.location,
            width=width,
            height=height,
            mode="RGB",
            origin="existing",
            provenance=Provenance(
                source_kind="existing", location=img.location, licence=img.licence or ""
            ),
        )
        got = dataset.apply(read, task).provenance
        assert (got.location, got.page, got.licence_url, got.title, got.source_kind) == (
            prov.location,
            prov.page,
            prov.licence_url,
            prov.title,
            prov.source_kind,
        )
        restored += 1
    assert restored == len(items)
