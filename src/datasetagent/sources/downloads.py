"""Web candidates' bytes as the pipeline downloaded them into ``RUN/downloads``.

Web sources (searches and URL lists) name URLs; the pipeline's fetch step downloads each one,
through the guarded client, as ``download_name(url)`` in the run's downloads folder, and
processing reads it from there (``DownloadedFiles``) — never from the network.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from datasetagent.sources.files import read_regular

if TYPE_CHECKING:
    from datasetagent.store import Candidate


def download_name(url: str) -> str:
    """The file name the download of ``url`` is stored under in the downloads folder."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def read_download(folder: Path, url: str) -> bytes:
    """The downloaded bytes of ``url``; OSError where there are none. Only a regular file is
    read, never through a symbolic link: a link planted in the folder would pass a file from
    elsewhere off as the web image."""
    return read_regular(folder / download_name(url), follow_links=False)


def stored_size(path: Path) -> int | None:
    """The size of the download stored at ``path``, or None where there is none: a missing
    file, or something that is not a regular file (a symbolic link is not followed)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


class DownloadedFiles:
    """The reader of a web kind's candidates: the bytes the fetch step stored for them. Lists
    nothing itself (the searches and URL lists do) and pickles for worker processes."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder

    def candidates(self) -> Iterator[Candidate]:
        return iter(())

    def read(self, location: str) -> bytes:
        return read_download(self.folder, location)
