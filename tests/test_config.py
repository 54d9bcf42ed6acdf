"""Run wiring: BuildOptions stored with the run, assemble(), and error causes under --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXE = [sys.executable, "-m", "datasetagent"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_debug_traceback_shows_the_cause_and_the_plain_error_stays_one_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [a, b\n")
    plain = _cli("build", str(bad), "-o", str(tmp_path / "run"))
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"error: {bad} line 2: not valid YAML (expected ',' or ']', but got '<stream end>')"
    ]
    debug = _cli("--debug", "build", str(bad), "-o", str(tmp_path / "run"))
    assert debug.returncode != 0
    # the YAML parser's own error, then ours raised from it
    assert "yaml.parser.ParserError" in debug.stderr
    assert "The above exception was the direct cause of the following exception" in debug.stderr
    assert debug.stderr.rstrip().endswith(
        "not valid YAML (expected ',' or ']', but got '<stream end>')"
    )
