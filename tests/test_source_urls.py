"""URL lists (``--source urls.csv``): each format, problems named by file and line, labels as
class hints, licences normalised, reading from the downloads folder, pickling."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

from datasetagent.errors import SourceError, UsageError
from datasetagent.sources import open_source
from datasetagent.sources.downloads import download_name
from datasetagent.sources.urls import UrlList
from datasetagent.spec import ClassSpec, DatasetSpec, SourceSpec
from datasetagent.store import Candidate

SPEC = DatasetSpec(
    classes=(ClassSpec(name="cat", synonyms=("kitty",)), ClassSpec(name="traffic light"))
)


def url_list(path: Path) -> UrlList:
    source = open_source(SourceSpec.parse(str(path)), SPEC)
    assert isinstance(source, UrlList)
    return source


def listed(path: Path) -> list[Candidate]:
    return list(url_list(path).candidates())


def error(path: Path) -> str:
    with pytest.raises(UsageError) as caught:
        listed(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- formats ----------------------------------------------------------------------------------
def test_a_text_list_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_text(
        "# cats from the garden\n\nhttps://example.org/a.jpg\n  http://example.org/b.png  \n"
        "   # indented comment\n",
        encoding="utf-8",
    )
    found = listed(path)
    assert [c.location for c in found] == ["https://example.org/a.jpg", "http://example.org/b.png"]
    assert all(c.source_kind == "urls" and c.origin == "collected" for c in found)
    assert all(c.licence == "user-supplied" and c.class_hint is None for c in found)
    assert all(c.web is not None for c in found)  # a web candidate: the pipeline downloads it


def test_a_csv_list_carries_labels_licences_and_web_info(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "urls.csv",
        "URL,Label,license,creator,page,title,license_url,width",
        "https://e.org/1.jpg,kitty,CC BY-SA 4.0,Ann,https://e.org/p/1,Cat on a mat,,640",
        "https://e.org/2.jpg,Traffic Lights,,Bob,,,https://creativecommons.org/licenses/by/2.0/,",
        "https://e.org/3.jpg,,,,,,,",
        'https://e.org/4.jpg,cat,"CC0 1.0 Universal",,,"Quoted, with a comma",,',
        "https://e.org/5.jpg,cat,All rights reserved,,,,,",
    )
    found = listed(path)
    assert [c.class_hint for c in found] == ["cat", "traffic light", None, "cat", "cat"]
    assert [c.licence for c in found] == [
        "CC-BY-SA-4.0",
        "CC-BY-2.0",  # the licence URL says what the empty name does not
        "user-supplied",  # no licence at all: the user vouches for the list
        "CC0-1.0",
        "unknown",
    ]
    first = found[0]
    assert first.creator == "Ann"
    assert first.web is not None
    assert (first.web.page, first.web.title, first.web.licence_url) == (
        "https://e.org/p/1",
        "Cat on a mat",
        None,
    )
    second = found[1].web
    assert second is not None
    assert second.licence_url == "https://creativecommons.org/licenses/by/2.0/"
    assert found[3].web is not None
    assert found[3].web.title == "Quoted, with a comma"


def test_a_row_may_say_user_supplied(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", "url,licence", "https://e.org/a.jpg,User-Supplied")
    assert [c.licence for c in listed(path)] == ["user-supplied"]


BY3 = "https://creativecommons.org/licenses/by/3.0/"


def test_a_jsonl_list_takes_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "urls.jsonl"
    rows = [
        {"url": "https://e.org/a.jpg", "label": "cats", "licence": "by", "licence_url": BY3},
        {"url": "https://e.org/b.jpg", "license": "cc0", "title": "B", "extra": [1, 2]},
        {"url": "https://e.org/c.jpg", "label": 7},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    source = url_list(path)
    found = list(source.candidates())
    assert [c.class_hint for c in found] == ["cat", None, None]
    # "by" alone names no version: the licence URL gives it
    assert [c.licence for c in found] == ["CC-BY-3.0", "CC0-1.0", "user-supplied"]
    assert found[0].web is not None
    assert found[0].web.licence_url == BY3
    assert found[1].web is not None
    assert found[1].web.title == "B"
    assert source.skip_messages() == [
        f"1 URL(s) in {path} have a label that names no class ('7'); they are labelled "
        "like unlabelled images"
    ]


def test_a_parquet_list_in_img2dataset_style(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "urls.parquet"
    table = pa.table(
        {
            "URL": ["https://e.org/a.jpg", "https://e.org/b.jpg"],
            "caption": ["a cat", "a light"],
            "LICENSE": ["CC-BY-4.0", None],
            "label": ["cat", "traffic light"],
        }
    )
    pq.write_table(table, path, row_group_size=1)
    found = listed(path)
    assert [(c.location, c.class_hint, c.licence) for c in found] == [
        ("https://e.org/a.jpg", "cat", "CC-BY-4.0"),
        ("https://e.org/b.jpg", "traffic light", "user-supplied"),
    ]
    pq.write_table(pa.table({"url": ["https://e.org/a.jpg", "gopher://x"]}), path)
    assert error(path) == f"{path} row 2: 'gopher://x' is not an http(s) URL"
    pq.write_table(pa.table({"link": ["https://e.org/a.jpg"]}), path)
    assert "no 'url' column (it has: 'link')" in error(path)
    path.write_bytes(b"not parquet at all")
    assert error(path).startswith(f"URL list {path}: not a readable Parquet file")


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "urls.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert "pip install 'datasetagent[hf]'" in error(path)


# -- problems ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["url", "https://e.org/a.jpg", "ftp://x"], "line 3: 'ftp://x' is not an http(s) URL"),
        (["url,label", ",cat"], "line 2: the url is empty"),
        (["url", "https://"], "line 2: 'https://' names no host"),
        (["url", "https://e.org/a b.jpg"], "holds spaces or control characters"),
        (["url", "http://e.org:99999999/a"], "is not a valid URL"),
        (["url,page", "https://e.org/a,javascript:alert(1)"], "line 2: page 'javascript:"),
        (["url,licence_url", "https://e.org/a,file:///etc/x"], "line 2: licence_url 'file:"),
        (["url,title", "https://e.org/a,a,b"], "line 2: 3 fields but the header names 2"),
        (
            ["link,label", "https://e.org/a,cat"],
            "line 1: no 'url' column (it has: 'link', 'label')",
        ),
        (["url,licence,License", "https://e.org/a,,"], "'licence' and 'License' both give"),
        (["url", '"https://e.org/a'], "not valid CSV"),
    ],
)
def test_bad_csv_rows_are_named_by_file_and_line(
    tmp_path: Path, lines: list[str], expected: str
) -> None:
    path = write_csv(tmp_path / "urls.csv", *lines)
    message = error(path)
    assert message.startswith(str(path))
    assert expected in message


def test_a_bad_text_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# header\nhttps://e.org/a.jpg\n\nmailto:me@e.org\n", encoding="utf-8")
    assert error(path) == f"{path} line 4: '***@e.org' is not an http(s) URL"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"url": "https://e.org/a"', "line 2: not valid JSON"),
        ('["https://e.org/a"]', "line 2: expected a JSON object"),
        ('{"link": "https://e.org/a", "label": "cat"}', "line 2: no 'url' column (it has: 'link'"),
        ('{"url": "https://e.org/a", "title": {"en": "x"}}', "line 2: title must be text"),
        ('{"url": true}', "line 2: url must be text, not bool"),
        ('{"url": "https://e.org/a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "too deep"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "urls.jsonl"
    path.write_text('{"url": "https://e.org/ok"}\n' + line + "\n", encoding="utf-8")
    assert expected in error(path)


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:s3cret-pw@e.org/a.jpg",
        "http://s3cret-pw@e.org/a.jpg",
        "ftp://alice:s3cret-pw@e.org/a.jpg",
        "https//alice:s3cret-pw@e.org/a.jpg",  # a typo, still never echoed
    ],
)
def test_urls_with_credentials_are_refused_without_showing_them(tmp_path: Path, url: str) -> None:
    path = tmp_path / "urls.txt"
    path.write_text(url + "\n", encoding="utf-8")
    message = error(path)
    assert f"{path} line 1:" in message
    assert "s3cret-pw" not in message
    assert "alice" not in message
    assert "***@e.org" in message


def test_credentials_in_a_page_url_are_refused_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", "url,page", "https://e.org/a,https://u:pw@e.org/p")
    message = error(path)
    assert "line 2: page 'https://***@e.org/p' holds a user name or password" in message
    assert "u:pw" not in message


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.txt", ""),
        ("comments.txt", "# nothing yet\n\n"),
        ("header.csv", "url,label\n"),
        ("nothing.csv", ""),
        ("blank.jsonl", "\n\n"),
    ],
)
def test_an_empty_list_is_an_error(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert error(path) == (
        f"URL list {path} lists no URLs; give one http(s) URL a line (.txt) or a 'url' column "
        "(.csv, .jsonl, .parquet)"
    )


def test_a_missing_or_undecodable_list(tmp_path: Path) -> None:
    assert "does not exist" in error(tmp_path / "absent.csv")
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"https://e.org/a.jpg\nhttps://e.org/caf\xe9.jpg\n")
    assert error(path) == f"{path} line 2: not UTF-8 text; save the list as UTF-8"
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"url\n"
        + b"".join(b"https://e.org/%d.jpg\n" % k for k in range(6000))
        + b"https://e.org/\xe9\n"
    )
    assert error(path) == f"{path} line 6002: not UTF-8 text; save the list as UTF-8"


def test_a_utf8_bom_from_a_spreadsheet_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("url,title\r\nhttps://e.org/a.jpg,Café\r\n".encode("utf-8-sig"))
    found = listed(path)
    assert [(c.location, c.web.title if c.web else None) for c in found] == [
        ("https://e.org/a.jpg", "Café")
    ]


# -- duplicates and labels --------------------------------------------------------------------
def test_a_url_listed_twice_is_offered_once(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "urls.csv",
        "url,label",
        "https://e.org/a.jpg,cat",
        "https://E.ORG/a.jpg,traffic light",  # the same URL: host names ignore case
        "https://e.org/a.jpg#frag,",  # the fragment never reaches the server
        "https://e.org/A.jpg,cat",  # a path is case sensitive: another image
    )
    source = url_list(path)
    found = list(source.candidates())
    assert [(c.location, c.class_hint) for c in found] == [
        ("https://e.org/a.jpg", "cat"),
        ("https://e.org/A.jpg", "cat"),
    ]
    assert source.skip_messages() == [f"2 URL(s) listed twice in {path}, offered once"]


def test_unknown_labels_are_reported_once_each(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "urls.csv",
        "url,label",
        "https://e.org/1,dog",
        "https://e.org/2,dog",
        "https://e.org/3,Cat",
        "https://e.org/4,zebra",
    )
    source = url_list(path)
    assert source.skip_messages() == []  # nothing listed yet
    assert [c.class_hint for c in source.candidates()] == [None, None, "cat", None]
    assert source.skip_messages() == [
        f"3 URL(s) in {path} have a label that names no class ('dog', 'zebra'); they are "
        "labelled like unlabelled images"
    ]


# -- reading and pickling ---------------------------------------------------------------------
def test_read_returns_the_download_and_never_fetches(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "urls.csv", "url", "https://e.org/a.jpg", "https://e.org/b.jpg")
    source = url_list(path)
    with pytest.raises(SourceError, match="no downloads folder was set"):
        source.read("https://e.org/a.jpg")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / download_name("https://e.org/a.jpg")).write_bytes(b"image a")
    source.downloads = downloads
    assert source.read("https://e.org/a.jpg") == b"image a"
    with pytest.raises(FileNotFoundError):  # processing rejects it as 'corrupt: cannot read'
        source.read("https://e.org/b.jpg")


def test_download_name_is_the_sha256_of_the_url() -> None:
    import hashlib

    url = "https://e.org/ä.jpg?x=1"
    assert download_name(url) == hashlib.sha256(url.encode()).hexdigest()
    assert download_name(url) != download_name(url + "2")


def test_a_list_pickles_small_and_reads_after(tmp_path: Path) -> None:
    lines = ["url,title"] + [f"https://e.org/{k}.jpg,{'long title ' * 20}" for k in range(500)]
    source = url_list(write_csv(tmp_path / "urls.csv", *lines))
    downloads = tmp_path / "dl"
    downloads.mkdir()
    (downloads / download_name("https://e.org/7.jpg")).write_bytes(b"seven")
    source.downloads = downloads
    data = pickle.dumps(source)
    assert len(data) < 1000  # the rows stay behind; workers only read
    copy = pickle.loads(data)
    assert copy.read("https://e.org/7.jpg") == b"seven"
    assert copy.kind == "urls"
