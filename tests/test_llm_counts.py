"""The model usage a build reports is what happened: requests are the HTTP requests the
server received (retries included), images the distinct images sent, failed the images that
got no answer (issue 10 §5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from datasetagent.spec import DatasetSpec
from helpers import digit_images, encode
from llm_stub import Reply, StubServer
from test_cli import run

N = 24  # images in the pool
RETRIES = 1  # resends after a 500


def _pool(tmp_path: Path) -> tuple[Path, Path]:
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, (img, _) in enumerate(digit_images(N // 2, classes=(5, 6))):
        (pool / f"p{k:02d}.png").write_bytes(encode(img))
    spec = DatasetSpec.model_validate(
        {"classes": [{"name": "5"}, {"name": "6"}], "target_per_class": N // 2,
         "image": {"min_side": 16}}
    )  # fmt: skip
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    return pool, tmp_path / "spec.yaml"


def _build(tmp_path: Path, stub: StubServer, *labeler: str) -> Any:
    pool, spec = _pool(tmp_path)
    return run(
        "build", str(spec), "--source", str(pool), *labeler,
        "--llm", "stub", "--llm-base-url", stub.base_url,
        "--labeler-option", f"llm.max_retries={RETRIES}",
        "--labeler-option", "llm.backoff=0.01",
        "-o", str(tmp_path / "run"), "--json",
    )  # fmt: skip


def _image(request: dict[str, Any]) -> str:
    return next(
        p["image_url"]["url"]
        for m in request["messages"]
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image_url"
    )


def _fails(url: str) -> bool:
    """Half the images, chosen by content: the same image gets the same answer every time."""
    return hashlib.sha256(url.encode()).digest()[0] % 2 == 0


@pytest.mark.parametrize("labeler", [(), ("--labeler", "llm"), ("--labeler", "llm:stub")])
def test_a_server_failing_every_request_counts_each_image_once(
    tmp_path: Path, labeler: tuple[str, ...]
) -> None:
    """A server answering 500 to everything: each image is sent once (however the LLM labeler
    is named), every request the server received is counted, and every image failed."""
    with StubServer() as stub:  # no script, no responder: every request gets a 500
        out = _build(tmp_path, stub, *labeler)
        received = stub.requests
    assert out.returncode == 0, out.stderr
    used = json.loads(out.stdout)["usage"]["llm:stub"]
    sent = {_image(r.body) for r in received}
    assert len(sent) == N
    assert len(received) == N * (1 + RETRIES)
    assert used["calls"] == len(received)
    assert used["retries"] == len(received) - len(sent)
    assert used["images"] == len(sent)
    assert used["failures"] == len(sent)
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())["usage"]
    assert stored == {"llm:stub": used}
    line = f"llm:stub: {len(received)} requests ({len(received) - N} retries), {N} images"
    assert f"{line}, {N} failed" in out.stderr


def test_a_server_failing_some_images_counts_those_as_failed(tmp_path: Path) -> None:
    def answer(request: dict[str, Any]) -> Reply:
        if _fails(_image(request)):
            return Reply.error(500)
        return Reply.json({"label": "5", "confidence": 0.9})

    with StubServer(answer) as stub:
        out = _build(tmp_path, stub, "--labeler", "llm")
        received = stub.requests
    assert out.returncode == 0, out.stderr
    used = json.loads(out.stdout)["usage"]["llm:stub"]
    sent = {_image(r.body) for r in received}
    failed = {u for u in sent if _fails(u)}
    assert len(sent) == N
    assert 0 < len(failed) < N
    assert len(received) == N + RETRIES * len(failed)
    assert used["calls"] == len(received)
    assert used["retries"] == RETRIES * len(failed)
    assert (used["images"], used["failures"]) == (len(sent), len(failed))
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())["usage"]
    assert stored == {"llm:stub": used}


def test_the_llm_labeler_without_a_model_is_a_usage_error(tmp_path: Path) -> None:
    """`--labeler llm` with no --llm: one line, exit 2, and no run folder left behind."""
    pool, spec = _pool(tmp_path)
    out = run("build", str(spec), "--source", str(pool), "--labeler", "llm",
              "-o", str(tmp_path / "run"))  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "--labeler llm needs a model" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
