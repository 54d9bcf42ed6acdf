"""The quality scan over folders of real and deliberately broken images."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from datasetagent.scan import ScanLine, ScanParams, scan_folder
from datasetagent.spec import CheckThresholds
from helpers import encode, photos


def png_bomb(width: int, height: int) -> bytes:
    """A PNG header announcing ``width``×``height`` grey pixels, with a token of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tiles() -> list[Image.Image]:
    """Distinct real-photo tiles, 160×120."""
    out = []
    for photo in photos():
        for x in range(0, 640 - 160 + 1, 160):
            for y in range(0, 427 - 120 + 1, 120):
                out.append(photo.crop((x, y, x + 160, y + 120)))
    return out


def scan(root: Path, **checks: object) -> dict[str, ScanLine]:
    params = ScanParams(checks=CheckThresholds.model_validate(checks))
    return {Path(line.path).name: line for line in scan_folder(root, params, workers=1)}


def test_awkward_files_are_each_reported(tmp_path: Path, tiles: list[Image.Image]) -> None:
    big = [t.resize((480, 360)) for t in tiles[:6]]  # distinct content for every good file
    jpeg = encode(big[0], "JPEG", quality=90)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>moved</body></html>")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    grey = np.asarray(big[1].convert("L"))
    deep = grey.astype(np.uint16) * 257
    (tmp_path / "deep.png").write_bytes(encode(Image.fromarray(deep)))
    (tmp_path / "cmyk.jpg").write_bytes(encode(big[2].convert("CMYK"), "JPEG"))
    frames = [big[3].rotate(a) for a in (0, 90, 180)]
    (tmp_path / "anim.gif").write_bytes(
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    )
    (tmp_path / "bomb.png").write_bytes(png_bomb(40_000, 40_000))
    (tmp_path / "fine.jpg").write_bytes(jpeg)
    (tmp_path / "misnamed.png").write_bytes(encode(big[4], "JPEG"))
    (tmp_path / "notes.txt").write_text("not scanned")
    (tmp_path / "export.dat").write_bytes(encode(big[5], "JPEG"))  # found by its bytes
    got = scan(tmp_path)
    assert set(got) == {
        "empty.jpg",
        "page.jpg",
        "cut.jpg",
        "deep.png",
        "cmyk.jpg",
        "anim.gif",
        "bomb.png",
        "fine.jpg",
        "misnamed.png",
        "export.dat",
    }
    assert got["empty.jpg"].issues == ["corrupt"]
    assert "0 bytes" in got["empty.jpg"].detail
    assert got["page.jpg"].issues == ["corrupt"]
    assert "HTML" in got["page.jpg"].detail
    assert got["cut.jpg"].issues == ["corrupt"]
    assert got["cut.jpg"].width == 480
    assert got["bomb.png"].issues == ["too_large"]
    assert (got["bomb.png"].width, got["bomb.png"].height) == (40_000, 40_000)
    assert got["deep.png"].ok
    # 16-bit scaled, not clipped to white
    assert got["deep.png"].scores["brightness"] == pytest.approx(grey.mean() / 255, abs=0.01)
    assert got["cmyk.jpg"].ok
    assert got["cmyk.jpg"].format == "JPEG"
    assert got["anim.gif"].ok
    assert got["anim.gif"].frames == 3
    assert "first of 3 frames" in got["anim.gif"].detail
    assert got["fine.jpg"].ok
    assert got["fine.jpg"].issues == []
    assert got["misnamed.png"].ok
    assert "JPEG data under a .png name" in got["misnamed.png"].detail
    assert got["export.dat"].ok
    assert got["export.dat"].format == "JPEG"
    for line in got.values():
        assert not line.ok or line.issues == []


def test_each_defect_type(tmp_path: Path, tiles: list[Image.Image]) -> None:
    base = tiles[3]
    cases = {
        "dark.jpg": ImageEnhance.Brightness(base).enhance(0.12),
        "bright.jpg": Image.eval(base, lambda v: 235 + v // 12),
        "blurry.jpg": base.filter(ImageFilter.GaussianBlur(6)),
        "blank.png": Image.new("RGB", (160, 120), (128, 128, 128)),
        "tiny.png": base.resize((24, 18)),
        "strip.jpg": tiles[5].resize((600, 40)),
        "good.jpg": tiles[7],
    }
    for name, img in cases.items():
        (tmp_path / name).write_bytes(encode(img, "PNG" if name.endswith("png") else "JPEG"))
    got = scan(tmp_path)
    assert got["dark.jpg"].issues == ["dark"]
    assert got["bright.jpg"].issues == ["bright"]
    assert got["blurry.jpg"].issues == ["blurry"]
    assert got["blurry.jpg"].ok
    assert "low_information" in got["blank.png"].issues
    assert got["tiny.png"].issues == ["tiny"]
    assert got["strip.jpg"].issues == ["odd_aspect"]
    assert got["good.jpg"].issues == []
    assert got["good.jpg"].ok
    strict = scan(tmp_path, flag_only=[])
    assert not strict["blurry.jpg"].ok


@pytest.mark.parametrize("batch", [512, 2])
def test_duplicates_keep_the_best_copy_and_name_it(
    tmp_path: Path, tiles: list[Image.Image], batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of a group the copy with the most pixels is kept, then a lossless one, then the least
    compressed, then the first seen; the others name it, wherever they come in the order and
    in whichever batch."""
    import datasetagent.scan

    monkeypatch.setattr(datasetagent.scan, "BATCH", batch)
    a = tiles[0]
    (tmp_path / "a1.jpg").write_bytes(encode(a, "JPEG", quality=90))
    exif = Image.Exif()
    exif[0x0131] = "another camera"
    (tmp_path / "a2.jpg").write_bytes(encode(a, "JPEG", quality=90, exif=exif.tobytes()))
    (tmp_path / "a3.jpg").write_bytes(encode(a.resize((240, 180)), "JPEG", quality=60))
    (tmp_path / "a4.png").write_bytes(encode(a.resize((240, 180))))
    (tmp_path / "a5.png").write_bytes(encode(a.resize((240, 180)), optimize=True))
    for k, other in enumerate(tiles[1:6]):
        (tmp_path / f"b{k}.jpg").write_bytes(encode(other, "JPEG"))
    dark = encode(ImageEnhance.Brightness(tiles[8]).enhance(0.1), "JPEG")
    (tmp_path / "c1.jpg").write_bytes(dark)
    (tmp_path / "c2.jpg").write_bytes(dark)
    (tmp_path / "d1.jpg").write_bytes(encode(tiles[7].resize((120, 90)), "JPEG", quality=95))
    (tmp_path / "d2.jpg").write_bytes(encode(tiles[7], "JPEG", quality=70))
    got = scan(tmp_path)
    assert got["c1.jpg"].issues == ["dark"]  # equal copies: the first seen is kept
    assert got["c2.jpg"].issues == ["dark", "exact_duplicate"]  # named even though c1 is out
    assert got["c2.jpg"].duplicate_of == str(tmp_path / "c1.jpg")
    best = str(tmp_path / "a4.png")  # largest, lossless, least compressed of the two PNGs
    assert got["a4.png"].ok
    assert got["a4.png"].duplicate_of is None
    for name in ("a1.jpg", "a2.jpg", "a3.jpg"):
        assert got[name].issues == ["near_duplicate"], name
        assert got[name].duplicate_of == best, name
    assert got["a5.png"].issues == ["exact_duplicate"]
    assert got["a5.png"].duplicate_of == best
    assert got["d2.jpg"].ok  # the larger copy, though seen last
    assert got["d1.jpg"].issues == ["near_duplicate"]
    assert got["d1.jpg"].duplicate_of == str(tmp_path / "d2.jpg")
    assert all(got[f"b{k}.jpg"].ok for k in range(5))


def test_symlinks_out_of_the_folder_are_not_followed(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(encode(tiles[0], "JPEG"))
    (inside / "own.jpg").write_bytes(encode(tiles[1], "JPEG"))
    os.symlink(outside / "secret.jpg", inside / "link.jpg")
    os.symlink(outside, inside / "linkdir")
    os.symlink(inside / "own.jpg", inside / "alias.jpg")
    skipped: list[str] = []
    lines = list(
        scan_folder(inside, ScanParams(), workers=1, on_skip=lambda p, why: skipped.append(p.name))
    )
    assert sorted(Path(line.path).name for line in lines) == ["alias.jpg", "own.jpg"]
    assert skipped == ["link.jpg"]


def test_scan_cli_writes_jsonl_and_a_summary(tmp_path: Path, tiles: list[Image.Image]) -> None:
    from click.testing import CliRunner

    from datasetagent.cli import main

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for k, tile in enumerate(tiles[:6]):
        (folder / "sub" / f"t{k}.jpg").write_bytes(encode(tile, "JPEG"))
    (folder / "t0-copy.jpg").write_bytes((folder / "sub" / "t0.jpg").read_bytes())
    (folder / "bad.jpg").write_bytes(b"oops")
    result = CliRunner().invoke(
        main, ["scan", str(folder), "--jsonl", str(tmp_path / "o.jsonl"), "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    keys = {"path", "ok", "issues", "duplicate_of", "scores", "width", "height"}
    assert all(keys <= set(line) for line in lines)
    by_name = {Path(line["path"]).name: line for line in lines}
    assert by_name["bad.jpg"]["issues"] == ["corrupt"]
    assert by_name["bad.jpg"]["width"] is None
    # files of a folder come before its sub-folders, so the copy at the top is seen first
    assert by_name["t0.jpg"]["issues"] == ["exact_duplicate"]
    assert by_name["t0.jpg"]["duplicate_of"] == str(folder / "t0-copy.jpg")
    assert "8 images" in result.stderr
    assert "corrupt 1" in result.stderr


def test_scan_jsonl_never_overwrites_a_file_that_is_not_a_scan(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    """``--jsonl photo.jpg`` (a slip) overwrote the photo with JSON lines; an earlier scan's
    output, an empty file or a new name are written as before."""
    from click.testing import CliRunner

    from datasetagent.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    photo = folder / "t0.jpg"
    photo.write_bytes(encode(tiles[0], "JPEG"))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for target in (photo, notes):
        before = target.read_bytes()
        result = CliRunner().invoke(main, ["scan", str(folder), "--jsonl", str(target)])
        assert result.exit_code == 2, result.output
        assert "is not the output of a scan" in result.stderr
        assert target.read_bytes() == before
    out = tmp_path / "scan.jsonl"
    for _ in range(2):  # new, then replacing its own output
        result = CliRunner().invoke(main, ["scan", str(folder), "--jsonl", str(out)])
        assert result.exit_code == 0, result.output
        assert len(out.read_text().splitlines()) == 1


def test_a_file_that_cannot_be_read_is_reported_in_its_place(tmp_path: Path) -> None:
    from datasetagent.scan import ScanParams, scan_files

    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48), "orange").save(good)
    gone = tmp_path / "gone.png"
    out = scan_files([str(gone), str(good)], ScanParams())
    assert [s.path for s in out] == [str(gone), str(good)]
    assert out[0].issues == ["corrupt"]
    assert out[0].detail.startswith("cannot read:")
    assert "corrupt" not in out[1].issues
    assert (out[1].width, out[1].height) == (64, 48)


def _children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_and_fork_server_exit_when_the_run_is_killed(tmp_path: Path) -> None:
    """kill -9 of a run leaves no pool process behind (they waited for work forever)."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time\n"
        "from datasetagent.runtime.local import LocalExecutor\n"
        "with LocalExecutor(2, chunksize=1) as ex:\n"
        "    list(ex.imap(time.sleep, [30] * 8))\n"
    )
    run = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        pool: list[int] = []
        while time.monotonic() < deadline:
            direct = _children(run.pid)
            workers = [w for d in direct for w in _children(d)]
            if len(workers) >= 2:
                pool = direct + workers
                break
            time.sleep(0.1)
        assert len(pool) >= 3, "the pool never started"
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pool):
            time.sleep(0.1)
        left = [p for p in pool if _alive(p)]
        for p in left:  # not to leave them behind if the test fails
            os.kill(p, signal.SIGKILL)
        assert left == []
    finally:
        run.kill()


@pytest.mark.parametrize("ink", [0, 255])
def test_pictures_drawn_in_the_alpha_channel_alone_are_told_apart(
    tmp_path: Path, tiles: list[Image.Image], ink: int
) -> None:
    """Two RGBA images with the same colour everywhere and different pictures in their alpha:
    what a viewer shows differs, so they are neither exact nor near duplicates, and neither
    is blank."""
    for k in range(3):
        rgba = np.full((*tiles[k].size[::-1], 4), ink, np.uint8)
        rgba[..., 3] = np.asarray(tiles[k].convert("L"))
        (tmp_path / f"a{k}.png").write_bytes(encode(Image.fromarray(rgba, "RGBA")))
    got = scan(tmp_path)
    for k in range(3):
        assert got[f"a{k}.png"].issues == [], got[f"a{k}.png"]


def test_the_reported_sharpness_is_what_min_sharpness_is_compared_to(
    tmp_path: Path, tiles: list[Image.Image]
) -> None:
    (tmp_path / "soft.png").write_bytes(encode(tiles[2].filter(ImageFilter.GaussianBlur(1.5))))
    (tmp_path / "sharp.png").write_bytes(encode(tiles[3]))
    for name, line in scan(tmp_path).items():
        reported = line.scores["sharpness"]
        assert "blurry" in scan(tmp_path, min_sharpness=reported * 1.01)[name].issues
        assert "blurry" not in scan(tmp_path, min_sharpness=reported * 0.99)[name].issues


def test_a_few_files_are_scanned_without_starting_a_pool() -> None:
    """Under two chunks of work run in the calling process: a pool costs more to start."""
    from datasetagent.runtime.local import LocalExecutor

    with LocalExecutor(2, chunksize=4) as executor:
        assert list(executor.imap(abs, [-1, -2, -3, -4, -5])) == [1, 2, 3, 4, 5]
        assert executor._pool is None
        assert list(executor.imap(abs, range(-9, 0))) == list(range(9, 0, -1))
        assert executor._pool is not None
