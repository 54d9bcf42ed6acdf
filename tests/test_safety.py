"""The tool never destroys what it did not write: export folders (guard, marker, atomic swap,
recovery after a kill), the build's run folder, the review queue file, and the run lock that
keeps two commands from changing one run at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import datasetagent.export as export_module
from datasetagent.errors import UsageError
from datasetagent.export import (
    MARKER,
    check_export_folder,
    export_samples,
    foreign_files,
    is_export,
    source_folders,
)
from datasetagent.pipeline import BuildResult, build
from datasetagent.spec import ClassSpec, DatasetSpec, SourceSpec
from datasetagent.store import BlobStore, RunStore
from helpers import digit_images, write_class_folders

EXE = [sys.executable, "-m", "datasetagent"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )


def _spec(pool: Path) -> DatasetSpec:
    return DatasetSpec(
        classes=(ClassSpec(name="0"), ClassSpec(name="1")),
        target_per_class=5,
        sources=(SourceSpec(location=str(pool)),),
        formats=("imagefolder",),
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """A small finished classification run (digits in class folders)."""
    root = tmp_path_factory.mktemp("finished")
    write_class_folders(root / "pool", digit_images(6, classes=(0, 1)))
    return build(_spec(root / "pool"), root / "run", workers=1)


@pytest.fixture
def run_copy(finished: BuildResult, tmp_path: Path) -> Path:
    """A copy of the finished run this test may change."""
    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    return run


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _export(run: Path, out: Path, **kw: object) -> Path:
    with RunStore(run / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        samples = [s.model_copy(update={"split": "train"}) for s in store.samples()][:6]
    blobs = BlobStore(run)
    return export_samples(
        "imagefolder",
        out,
        spec,
        samples,
        lambda s: blobs.path(s.blob),
        None,
        **kw,  # type: ignore[arg-type]
    )


# -- export folders ---------------------------------------------------------------------------


def test_export_refuses_a_folder_of_the_users_files_unless_forced(
    run_copy: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    out = cli("export", str(run_copy), "-o", str(mine))
    assert out.returncode == 2, out.stderr
    assert "holds files that no export of datasetagent wrote" in out.stderr
    assert "thesis.tex" in out.stderr
    assert "--force" in out.stderr
    assert "Traceback" not in out.stderr
    assert (mine / "thesis.tex").read_text() == "years of work"
    forced = cli("export", str(run_copy), "-o", str(mine), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (mine / "thesis.tex").exists()
    assert is_export(mine)


def test_export_never_replaces_the_runs_source_folders_even_forced(
    finished: BuildResult, run_copy: Path
) -> None:
    (source,) = source_folders(finished.spec)
    before = _tree(source.parent)
    inner = source / "0" / "notes"
    inner.mkdir()
    (inner / "todo.txt").write_text("mine")
    for target, fragment in [
        (source, "where the run reads its images from"),
        (source.parent, "where the run reads its images from"),
        (inner, "--force never replaces it"),
    ]:
        out = cli("export", str(run_copy), "-o", str(target), "--force")
        assert out.returncode == 2, out.stderr
        assert fragment in out.stderr
        assert "Traceback" not in out.stderr
    assert (inner / "todo.txt").read_text() == "mine"
    shutil.rmtree(inner)
    assert _tree(source.parent) == before
    fresh = cli("export", str(run_copy), "-o", str(source / "exported"))
    assert fresh.returncode == 0, fresh.stderr  # a new folder inside a source is fine
    shutil.rmtree(source / "exported")


def test_every_export_carries_the_marker_and_replaces_a_previous_export(
    run_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = cli("export", str(run_copy), "-o", str(out))
    assert first.returncode == 0, first.stderr
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "datasetagent"
    assert marker["format"] == "imagefolder"
    again = cli("export", str(run_copy), "-o", str(out), "--format", "csv")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / MARKER).read_text())["format"] == "csv"
    assert not list(tmp_path.glob(".out*"))  # neither partial nor old export left beside it
    # the build's own exports carry it too, and a resumed build replaces them
    assert is_export(run_copy / "export" / "imagefolder")
    assert (run_copy / "export" / "imagefolder" / MARKER).is_file()


def test_an_export_written_before_the_marker_is_still_recognised(
    run_copy: Path, tmp_path: Path
) -> None:
    old = _export(run_copy, tmp_path / "old")
    (old / MARKER).unlink()
    assert is_export(old)  # manifest.jsonl of this tool's records beside README.md
    _export(run_copy, old)
    assert (old / MARKER).is_file()
    # a user's folder with files of the same names is not taken for one
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "README.md").write_text("# my project\n")
    (fake / "manifest.jsonl").write_text('{"name": "my list"}\n')
    assert not is_export(fake)
    with pytest.raises(UsageError, match="no export of datasetagent wrote"):
        _export(run_copy, fake)
    assert (fake / "README.md").read_text() == "# my project\n"


@pytest.mark.parametrize(
    "where",
    ["run", "run/images", "run/summary", "parent of run", "cwd", "parent of cwd"],
)
def test_export_never_replaces_the_run_or_what_holds_it_or_the_cwd_even_forced(
    run_copy: Path, tmp_path: Path, where: str
) -> None:
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    (run_copy / "summary").mkdir()
    target = {
        "run": str(run_copy),
        "run/images": str(run_copy / "images"),
        "run/summary": str(run_copy / "summary"),
        "parent of run": str(tmp_path),
        "cwd": ".",
        "parent of cwd": "..",
    }[where]
    before = _tree(tmp_path)
    out = cli("export", str(run_copy), "-o", target, "--force", cwd=cwd)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert _tree(tmp_path) == before


def test_export_into_the_runs_export_folder_is_allowed(run_copy: Path) -> None:
    out = cli("export", str(run_copy), "-o", str(run_copy / "export" / "csv"), "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert is_export(run_copy / "export" / "csv")
    assert is_export(run_copy / "export" / "imagefolder")


def test_export_to_a_file_or_a_symlink_is_one_line(run_copy: Path, tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    link = tmp_path / "link"
    previous = _export(run_copy, tmp_path / "previous")
    link.symlink_to(previous, target_is_directory=True)
    for target, says in ((file, "is a file"), (link, "is a symbolic link")):
        out = cli("export", str(run_copy), "-o", str(target), "--force")
        assert out.returncode == 2, out.stderr
        assert says in out.stderr
        assert "Traceback" not in out.stderr
    assert file.read_text() == "keep"
    assert link.is_symlink()
    assert is_export(previous)


@pytest.mark.parametrize("crash_after", ["aside", "in"])
def test_a_swap_killed_midway_leaves_one_whole_export_and_is_finished_next_time(
    run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: str
) -> None:
    out = _export(run_copy, tmp_path / "out")
    old = _tree(out)
    real_rename = Path.rename
    real_rmtree = shutil.rmtree

    class Killed(BaseException):
        pass

    def rename(self: Path, target: Path) -> Path:
        moved = real_rename(self, target)
        if crash_after == "aside" and self == out:
            raise Killed  # the old export set aside, the new one not yet in
        return moved

    def rmtree(path: Path, *args: object, **kw: object) -> None:
        if crash_after == "in" and Path(path).name.endswith(".datasetagent-old"):
            raise Killed  # the new export in, the old one not yet deleted
        real_rmtree(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(export_module.shutil, "rmtree", rmtree)
    with pytest.raises(Killed):
        _export(run_copy, out)
    monkeypatch.undo()
    aside = tmp_path / ".out.datasetagent-old"
    assert _tree(aside) == old  # the old export is whole, aside
    if crash_after == "in":
        assert is_export(out)  # and the new one whole in place
    else:
        assert not out.exists()
    if crash_after == "aside":
        check_export_folder(out)  # asking changes nothing
        assert _tree(aside) == old
        assert not out.exists()
    # the next export first finishes or undoes the swap, then swaps again
    renames: list[tuple[str, str]] = []

    def watched(self: Path, target: Path) -> Path:
        renames.append((self.name, Path(target).name))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", watched)
    _export(run_copy, out)
    assert is_export(out)
    assert not aside.exists()
    restored = [(".out.datasetagent-old", "out")] if crash_after == "aside" else []
    assert renames == [*restored, ("out", ".out.datasetagent-old"), (".out.partial", "out")]


def test_a_previous_export_holding_the_users_files_is_not_replaced_unless_forced(
    run_copy: Path, tmp_path: Path
) -> None:
    """A notebook or an extra folder the user put into an export is not the export's to
    delete: replacing it needs --force, like any folder of the user's files."""
    out = _export(run_copy, tmp_path / "out")
    (out / "train.ipynb").write_text("my notebook")
    (out / "train" / "extra").mkdir(parents=True)
    (out / "train" / "extra" / "more.png").write_bytes(b"mine")
    refused = cli("export", str(run_copy), "-o", str(out))
    assert refused.returncode == 2, refused.stderr
    assert "holds files it did not write (found 2: train.ipynb, train/extra/more.png)" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert (out / "train.ipynb").read_text() == "my notebook"
    # an untouched export is replaced as before; forced, the user's files go too
    assert (
        cli("export", str(run_copy), "-o", str(_export(run_copy, tmp_path / "b"))).returncode == 0
    )
    forced = cli("export", str(run_copy), "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (out / "train.ipynb").exists()


def test_an_export_folder_named_with_dot_dot_is_the_folder_it_names(
    run_copy: Path, tmp_path: Path
) -> None:
    """``-o new/train/..`` replaces the export ``new``: the temporary and old copies are its
    siblings, never left behind inside it."""
    assert cli("export", str(run_copy), "-o", str(tmp_path / "new")).returncode == 0
    for _ in range(2):
        out = cli("export", str(run_copy), "-o", str(tmp_path / "new" / "train" / ".."))
        assert out.returncode == 0, out.stderr
        assert is_export(tmp_path / "new")
    assert not [p for p in (tmp_path / "new").rglob("*") if "partial" in p.name or "old" in p.name]
    assert not list(tmp_path.glob(".*"))


def test_export_never_replaces_the_home_folder_even_forced(run_copy: Path, tmp_path: Path) -> None:
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HOME": str(home)}
    for target in (home, home.parent):
        out = subprocess.run(
            [*EXE, "export", str(run_copy), "-o", str(target), "--force"],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
            timeout=300,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert "is your home folder or contains it" in out.stderr
    assert (home / "thesis.tex").read_text() == "years of work"


def test_two_exports_to_one_folder_take_turns(run_copy: Path, tmp_path: Path) -> None:
    """Two exports into one folder share its temporary and old copy names: the second waits
    for the first (it deleted the first's half-written copy, which then failed or put a
    mixed export in place), then replaces it whole."""
    import threading

    out = tmp_path / "out"
    with RunStore(run_copy / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        samples = [s.model_copy(update={"split": "train"}) for s in store.samples()]
    blobs = BlobStore(run_copy)
    writing, release = threading.Event(), threading.Event()

    def slow(sample: object) -> Path:
        writing.set()
        release.wait(30)
        return blobs.path(sample.blob)  # type: ignore[attr-defined]

    errors: list[BaseException] = []

    def run(chosen: list[object], path: Callable[[object], Path]) -> None:
        try:
            export_samples("imagefolder", out, spec, chosen, path, None)  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            errors.append(exc)

    first = threading.Thread(target=run, args=(samples[:6], slow))
    first.start()
    assert writing.wait(30)
    second = threading.Thread(target=run, args=(samples[:3], lambda s: blobs.path(s.blob)))
    second.start()
    second.join(0.5)
    release.set()
    first.join(60)
    second.join(60)
    assert errors == []
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 3  # the second export, whole
    assert all((out / json.loads(line)["file"]).is_file() for line in manifest)
    assert foreign_files(out) == []
    assert not list(tmp_path.glob(".out*"))


def test_an_export_where_folders_cannot_be_locked_still_runs(
    run_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(export_module.fcntl, "flock", no_locks)
    out = _export(run_copy, tmp_path / "out")
    assert is_export(out)
    assert "cannot lock" in caplog.text


def test_export_inside_a_symlinked_run_is_still_the_run(run_copy: Path, tmp_path: Path) -> None:
    link = tmp_path / "alias"
    link.symlink_to(run_copy, target_is_directory=True)
    before = _tree(run_copy)
    out = cli("export", str(link), "-o", str(run_copy / "images"), "--force")
    assert out.returncode == 2, out.stderr
    assert "inside the run folder" in out.stderr
    assert _tree(run_copy) == before


# -- the build's run folder -------------------------------------------------------------------


def test_build_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "pool", digit_images(6, classes=(0, 1)))
    target = tmp_path / "project"
    target.mkdir()
    (target / "spec.yaml").write_text("my own notes\n")
    (target / "summary.json").write_text("{}")
    with pytest.raises(UsageError, match=r"holds files but no run.*spec\.yaml"):
        build(_spec(tmp_path / "pool"), target, workers=1)
    assert (target / "spec.yaml").read_text() == "my own notes\n"
    assert sorted(p.name for p in target.iterdir()) == ["spec.yaml", "summary.json"]
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        build(_spec(tmp_path / "pool"), file, workers=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build(_spec(tmp_path / "pool"), empty, workers=1).exported


def test_build_into_a_folder_it_cannot_make_is_one_line(tmp_path: Path) -> None:
    """A link to a missing folder, or a path through a file: mkdir's error was a traceback."""
    write_class_folders(tmp_path / "pool", digit_images(2, classes=(0, 1)))
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "run")
    for target, says in (
        (tmp_path / "dangling", "it is a link to a missing folder"),
        (tmp_path / "notes.txt" / "run", "Not a directory"),
    ):
        with pytest.raises(UsageError, match=f"cannot make the run folder .*: {says}"):
            build(_spec(tmp_path / "pool"), target, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "missing").exists()


# -- the review queue file --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["run.db", "run.db-wal", "spec.yaml", "summary.json", "export/imagefolder/README.md"]
)
def test_review_write_never_overwrites_a_file_of_the_run(run_copy: Path, name: str) -> None:
    target = run_copy / name
    existed = target.read_bytes() if target.exists() else None
    out = cli("review", str(run_copy), "--write", str(target))
    assert out.returncode == 2, out.stderr
    assert "is a file of the run" in out.stderr
    assert "Traceback" not in out.stderr
    assert (target.read_bytes() if target.exists() else None) == existed
    with RunStore(run_copy / "run.db") as store:
        assert store.load_spec() is not None


def test_review_write_keeps_other_files_and_a_persons_decisions(
    run_copy: Path, tmp_path: Path
) -> None:
    queue = run_copy / "queue.jsonl"  # a new file beside the run's is fine
    out = cli("review", str(run_copy), "--write", str(queue), "--audit", "3")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in queue.read_text().splitlines()]
    assert len(lines) == 3
    again = cli("review", str(run_copy), "--write", str(queue), "--audit", "3")
    assert again.returncode == 0, again.stderr  # an undecided queue is replaced
    lines[0]["decision"] = "accept"
    decided = "".join(json.dumps(x) + "\n" for x in lines)
    queue.write_text(decided)
    refused = cli("review", str(run_copy), "--write", str(queue))
    assert refused.returncode == 2
    assert "holds 1 decision(s) a person made" in refused.stderr
    assert queue.read_text() == decided
    notes = tmp_path / "notes.txt"
    notes.write_text("not a queue\n")
    refused = cli("review", str(run_copy), "--write", str(notes))
    assert refused.returncode == 2
    assert "is not a review queue" in refused.stderr
    assert notes.read_text() == "not a queue\n"


def test_review_write_never_opens_or_replaces_a_fifo(run_copy: Path, tmp_path: Path) -> None:
    """A FIFO (or a link to one, or to a device) is no queue: reading it would hang, and
    replacing it would put a plain file where /dev/null was."""
    fifo = tmp_path / "queue.jsonl"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(fifo)
    for target in (fifo, link):
        out = subprocess.run(
            [*EXE, "review", str(run_copy), "--write", str(target)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
            timeout=60,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert "is not a regular file" in out.stderr
    assert fifo.is_fifo()


def _queue_of(run: Path, tmp_path: Path) -> list[dict[str, object]]:
    queue = tmp_path / "queue.jsonl"
    assert cli("review", str(run), "--write", str(queue), "--audit", "2").returncode == 0
    return [json.loads(x) for x in queue.read_text().splitlines()]


@pytest.mark.parametrize("case", ["label list", "label number", "not UTF-8", "decided twice"])
def test_review_apply_refuses_a_malformed_queue_whole(
    run_copy: Path, tmp_path: Path, case: str
) -> None:
    """One line, exit 2, the line named, nothing applied: a label that is not text, a file
    that is not UTF-8, or two decisions on one sample (both were applied and both counted,
    the second silently winning and the audit counting the sample twice)."""
    first, second = _queue_of(run_copy, tmp_path)
    good = {**second, "decision": "accept"}
    lines = {
        "label list": [good, {**first, "decision": "relabel", "label": ["1"]}],
        "label number": [good, {**first, "decision": "relabel", "label": 1}],
        "not UTF-8": [good, {**first, "decision": "accept"}],
        "decided twice": [
            good,
            {**first, "decision": "relabel", "label": "0"},
            {**first, "decision": "accept"},
        ],
    }[case]
    text = "".join(json.dumps(x) + "\n" for x in lines).encode()
    if case == "not UTF-8":
        text += b'{"id": "caf\xe9", "decision": "accept"}\n'
    queue = tmp_path / "decided.jsonl"
    queue.write_bytes(text)
    with RunStore(run_copy / "run.db") as store:
        before = store.samples()
    out = cli("review", str(run_copy), "--apply", str(queue))
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    where = {"label list": ":2:", "label number": ":2:", "not UTF-8": "", "decided twice": ":3:"}
    assert f"{queue}{where[case]}" in out.stderr
    with RunStore(run_copy / "run.db") as store:
        assert store.samples() == before


@pytest.mark.parametrize("name", ["run.db", "spec.yaml", "summary.json", "images/new.yaml"])
def test_plan_output_never_overwrites_a_file_of_a_run(run_copy: Path, name: str) -> None:
    """``plan -o RUN/run.db`` replaced the run's database with YAML."""
    target = run_copy / name
    existed = target.read_bytes() if target.exists() else None
    out = cli("plan", "cats and dogs", "-o", str(target))
    assert out.returncode == 2, out.stderr
    assert "is a file of the run" in out.stderr
    assert (target.read_bytes() if target.exists() else None) == existed


def test_plan_output_never_overwrites_a_file_that_is_not_a_spec(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a photo")
    out = cli("plan", "cats and dogs", "-o", str(photo))
    assert out.returncode == 2, out.stderr
    assert "exists and is not a spec" in out.stderr
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a photo"
    spec = tmp_path / "spec.yaml"
    for _ in range(2):  # new, then replacing a spec
        assert cli("plan", "cats and dogs", "-o", str(spec)).returncode == 0
        assert "classes:" in spec.read_text()


def test_applying_a_queue_again_does_not_audit_twice(run_copy: Path, tmp_path: Path) -> None:
    """Applied a second time, a relabel was audited again, now against the label it had set:
    the audit grew and ALR fell (0.78 to 0.64 on 10 decisions) with nothing new decided."""
    first, *rest = _queue_of(run_copy, tmp_path)
    other = "0" if first["label"] == "1" else "1"
    lines = [{**first, "decision": "relabel", "label": other}]
    lines += [{**x, "decision": "accept"} for x in rest]
    queue = tmp_path / "decided.jsonl"
    queue.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert cli("review", str(run_copy), "--apply", str(queue)).returncode == 0
    with RunStore(run_copy / "run.db") as store:
        audits = store.audits("audit")
    assert len(audits) == len(lines)
    again = cli("review", str(run_copy), "--apply", str(queue))
    assert again.returncode == 0, again.stderr
    with RunStore(run_copy / "run.db") as store:
        assert store.audits("audit") == audits


# -- the run lock -----------------------------------------------------------------------------


@pytest.fixture
def held(run_copy: Path) -> Iterator[int]:
    """Another process holding the run's lock; yields its pid."""
    code = (
        "import sys; from pathlib import Path; from datasetagent.store import run_lock\n"
        "with run_lock(Path(sys.argv[1]), 'build'):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_copy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_run_in_use_refuses_build_review_and_export(
    run_copy: Path, tmp_path: Path, held: int
) -> None:
    with pytest.raises(UsageError, match=f"in use by pid {held} \\(build\\)"):
        build(None, run_copy, resume=True, workers=1)
    queue = tmp_path / "queue.jsonl"
    assert cli("review", str(run_copy), "--write", str(queue)).returncode == 0  # reads only
    for args in (
        ["review", str(run_copy), "--apply", str(queue)],
        ["export", str(run_copy), "-o", str(tmp_path / "out")],
    ):
        out = cli(*args)
        assert out.returncode == 2, out.stderr
        assert f"is in use by pid {held} (build)" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_lock_goes_with_a_killed_holder(run_copy: Path, tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from datasetagent.store import run_lock\n"
        "with run_lock(Path(sys.argv[1]), 'export'):\n"
        "    print('held', flush=True); os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run_copy)], capture_output=True, text=True, env=env
    )
    assert proc.stdout == "held\n"
    assert proc.returncode == -9
    out = cli("export", str(run_copy), "-o", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr


def test_a_resume_takes_the_runs_own_dataset_again_and_no_planning_flags(tmp_path: Path) -> None:
    """``--existing`` on a resume names the run's dataset again (so switches such as
    ``--existing-outside-root`` reach it); another dataset, or --format/--set/--source that
    only planning reads, is refused rather than silently ignored."""
    from datasetagent.sources.existing import open_existing

    write_class_folders(tmp_path / "seed", digit_images(4, classes=(0, 1)))
    write_class_folders(tmp_path / "other", digit_images(4, classes=(0, 1)))
    spec = _spec(tmp_path / "seed").model_copy(
        update={"existing": str(tmp_path / "seed"), "sources": ()}
    )
    run = tmp_path / "run"
    build(spec, run, workers=1)
    with pytest.raises(UsageError, match="is not the dataset the run in"):
        build(None, run, resume=True, workers=1, existing=open_existing(tmp_path / "other"))
    again = build(None, run, resume=True, workers=1, existing=open_existing(tmp_path / "seed"))
    assert again.resumed_stages > 0
    out = cli("build", "--resume", "-o", str(run), "--format", "csv")
    assert out.returncode == 2, out.stderr
    assert "--format need a request or spec file" in out.stderr
    assert f"datasetagent export {run} --format F" in out.stderr


def test_a_run_keeps_its_relative_source_folders_anchored(tmp_path: Path) -> None:
    """A relative --source is stored as the folder it named when the run started: an export
    from another folder still knows (and protects) it, and spec.yaml says where it is."""
    work = tmp_path / "work"
    write_class_folders(work / "pool", digit_images(6, classes=(0, 1)))
    (work / "spec.yaml").write_text(_spec(Path("pool")).to_yaml(), encoding="utf-8")
    built = cli("build", "spec.yaml", "-o", "run", cwd=work)
    assert built.returncode == 0, built.stderr
    assert f"location: {work / 'pool'}" in (work / "run" / "spec.yaml").read_text()
    before = _tree(work / "pool")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = cli("export", str(work / "run"), "-o", str(work / "pool"), "--force", cwd=elsewhere)
    assert out.returncode == 2, out.stderr
    assert "where the run reads its images from" in out.stderr
    assert _tree(work / "pool") == before
