"""Attribution files of every export, written as samples stream past.

* ``ATTRIBUTION.md``: one row per image: its file in the export, where it came from, its
  creator, its licence and what processing changed.
* ``LICENSES.md``: each licence in the export, where its text lives, what it asks of users,
  and how many images carry it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO

from datasetagent.records import Sample
from datasetagent.spec import USER_SUPPLIED

#: Where each licence's text lives.
LICENCE_URLS = {
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "PDM": "https://creativecommons.org/publicdomain/mark/1.0/",
    "PDM-1.0": "https://creativecommons.org/publicdomain/mark/1.0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "CC-BY-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "CC-BY-SA-2.0": "https://creativecommons.org/licenses/by-sa/2.0/",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
}


def licence_terms(licence: str) -> str:
    """What a licence asks of whoever uses the images, in a few words."""
    if licence == USER_SUPPLIED:
        return "supplied by the user from their own files; terms as the user holds them"
    if licence.startswith(("CC0", "PDM")):
        return "public domain: no conditions"
    if licence.startswith("CC-BY"):
        terms = ["credit the creator and link the source and licence"]
        if "-NC" in licence:
            terms.append("no commercial use")
        if "-SA" in licence:
            terms.append("share adaptations under the same licence")
        if "-ND" in licence:
            terms.append("no adaptations")
        return "; ".join(terms)
    return "see the licence text"


def _cell(text: str | None) -> str:
    return (text or "").replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


class AttributionWriter:
    """Streams ``ATTRIBUTION.md`` row by row; ``close()`` adds ``LICENSES.md``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.counts: Counter[str] = Counter()
        self._file: IO[str] | None = None

    def __enter__(self) -> AttributionWriter:
        self._file = (self.out / "ATTRIBUTION.md").open("w", encoding="utf-8")
        self._file.write(
            "# Attribution\n\nEvery image of this dataset, where it came from, who made it and "
            "under which licence (see `LICENSES.md` for what each licence asks).\n\n"
            "| file | source | creator | licence | changes |\n|---|---|---|---|---|\n"
        )
        return self

    def add(self, sample: Sample, file: str) -> None:
        if self._file is None:
            raise RuntimeError("AttributionWriter used outside its with-block")
        prov = sample.provenance
        self.counts[prov.licence] += 1
        steps = ", ".join(step.name for step in prov.steps) or "none"
        self._file.write(
            f"| {_cell(file)} | {_cell(prov.location)} | {_cell(prov.creator) or 'unknown'} | "
            f"{_cell(prov.licence)} | {_cell(steps)} |\n"
        )

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if exc and exc[0] is not None:
            return
        lines = [
            "# Licences",
            "",
            "The licences of this dataset's images. Each image's own licence, creator and source "
            "are in `ATTRIBUTION.md` and `manifest.jsonl`.",
            "",
            "| licence | images | text | conditions |",
            "|---|---|---|---|",
        ]
        for name, n in sorted(self.counts.items()):
            url = LICENCE_URLS.get(name, "")
            lines.append(f"| {_cell(name)} | {n} | {url} | {_cell(licence_terms(name))} |")
        (self.out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
