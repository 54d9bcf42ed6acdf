"""The review web app (review_app/): its JSON API, the decisions it stores, and its security
checks (Host, CSRF, image ids), through Starlette's TestClient (no sockets); the command line
(--serve, --host, --port 0) in a subprocess."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from datasetagent.pipeline import build, final_samples
from datasetagent.records import ClassLabel, Sample
from datasetagent.review_app.app import create_app
from datasetagent.review_app.session import ReviewSession
from datasetagent.store import RunStore

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token-123"
#: the samples held back in the fixture run: (confidence, reason)
HELD = [
    (0.95, "low confidence"),
    (0.92, "low confidence"),
    (0.91, "disputed: checker says another class"),
    (0.60, "low confidence"),
    (0.55, "disputed: checker says another class"),
    (0.40, "low confidence"),
]


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished classification run of digits (4 classes, 12 each, targets 20) in which six
    labelled samples are then held back for review with the confidences and reasons of HELD."""
    from test_supervision_loop import _flat_flipped_pool

    tmp = tmp_path_factory.mktemp("review-app")
    with pytest.MonkeyPatch.context() as mp:
        spec, _ = _flat_flipped_pool(tmp, mp, 12, 20)
        build(spec, tmp / "run", labelers=["flipper"], workers=1)
    with RunStore(tmp / "run" / "run.db") as store:
        labelled = store.samples(status=["labelled"])
        held = []
        for k, (conf, reason) in enumerate(HELD):
            s = labelled[k * 7]
            held.append(
                s.model_copy(
                    update={
                        "status": "review",
                        "review_reasons": (reason,),
                        "annotations": (
                            ClassLabel(label=s.label or "0", confidence=conf, labeler="flipper"),
                        ),
                    }
                )
            )
        store.update_samples(held)
    return tmp / "run"


@pytest.fixture
def run(built_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(built_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def client(run: Path) -> Iterator[TestClient]:
    session = ReviewSession(run, audit_size=5)
    with TestClient(create_app(session, "127.0.0.1", PORT, TOKEN), base_url=BASE) as c:
        c.headers["X-CSRF-Token"] = TOKEN
        yield c


def _samples(run: Path) -> dict[str, Sample]:
    with RunStore(run / "run.db") as store:
        return {s.id: s for s in store.samples()}


def _exported(run: Path) -> dict[str, Sample]:
    with RunStore(run / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        return {s.id: s for s in final_samples(store, spec)}


def test_queue_lists_held_back_samples_short_classes_first_then_the_audit(
    client: TestClient, run: Path
) -> None:
    items = client.get("/api/queue").json()["items"]
    stored = _samples(run)
    review = [i for i in items if i["kind"] == "review"]
    audit = [i for i in items if i["kind"] == "audit"]
    assert len(review) == len(HELD)
    assert len(audit) == 5
    assert items == review + audit
    assert {i["id"] for i in review} == {s.id for s in stored.values() if s.status == "review"}
    for i in items:
        s = stored[i["id"]]
        assert {"id", "kind", "label", "confidence", "reason", "image"} <= i.keys()
        assert i["label"] == s.label
        assert i["confidence"] == s.confidence
        assert i["image"] == f"/image/{s.id}"
    # every class is short of its target of 20: the least certain proposal first
    assert [i["confidence"] for i in review] == sorted(c for c, _ in HELD)
    assert all(stored[i["id"]].status == "labelled" for i in audit)


def test_each_decision_is_stored_at_once_and_export_reflects_it(
    client: TestClient, run: Path
) -> None:
    review = [i for i in client.get("/api/queue").json()["items"] if i["kind"] == "review"]
    accept, reject, relabel = review[:3]
    other = next(c for c in ("0", "1", "2", "3") if c != relabel["label"])
    for body in (
        {"id": accept["id"], "decision": "accept"},
        {"id": reject["id"], "decision": "reject"},
        {"id": relabel["id"], "decision": "relabel", "label": other},
    ):
        r = client.post("/api/decisions", json=body)
        assert r.status_code == 200, r.text
    stored = _samples(run)
    assert stored[accept["id"]].status == "labelled"
    assert stored[accept["id"]].annotations[0].labeler == "human"
    assert stored[reject["id"]].status == "rejected"
    assert stored[relabel["id"]].label == other
    exported = _exported(run)
    assert exported[accept["id"]].label == accept["label"]
    assert exported[relabel["id"]].label == other
    assert reject["id"] not in exported
    left = {i["id"] for i in client.get("/api/queue").json()["items"]}
    assert not {accept["id"], reject["id"], relabel["id"]} & left
    progress = client.get("/api/progress").json()
    assert progress["decisions"] == 3
    with RunStore(run / "run.db") as store:
        have = store.label_counts(["labelled"])
    assert {c["name"]: c["accepted"] for c in progress["classes"]} == {
        c: have.get(c, 0) for c in ("0", "1", "2", "3")
    }


def test_decisions_on_audit_items_are_a_persons_audits_counted_in_alr(
    client: TestClient, run: Path
) -> None:
    from datasetagent.agents.verification import Verification

    audit = [i for i in client.get("/api/queue").json()["items"] if i["kind"] == "audit"]
    wrong = next(c for c in ("0", "1", "2", "3") if c != audit[1]["label"])
    client.post("/api/decisions", json={"id": audit[0]["id"], "decision": "accept"})
    client.post(
        "/api/decisions", json={"id": audit[1]["id"], "decision": "relabel", "label": wrong}
    )
    with RunStore(run / "run.db") as store:
        audits = [a for a in store.audits("audit") if a.checker == "human"]
    assert {(a.sample_id, a.agree) for a in audits} == {
        (audit[0]["id"], True),
        (audit[1]["id"], False),
    }
    with RunStore(run / "run.db") as store:
        spec = store.load_spec()
        assert spec is not None
        alr = Verification(store, spec, lambda s: None).alr(final_samples(store, spec))
    assert alr is not None
    assert (alr.value, alr.audited) == (0.5, 2)
    assert alr.method == "audit of 2 accepted labels by human"
    # a decision on a held-back sample is no audit
    review = next(i for i in client.get("/api/queue").json()["items"] if i["kind"] == "review")
    client.post("/api/decisions", json={"id": review["id"], "decision": "accept"})
    with RunStore(run / "run.db") as store:
        assert len([a for a in store.audits("audit") if a.checker == "human"]) == 2


def test_undo_restores_the_sample_and_forgets_the_audit(client: TestClient, run: Path) -> None:
    before = _samples(run)
    audit = next(i for i in client.get("/api/queue").json()["items"] if i["kind"] == "audit")
    client.post("/api/decisions", json={"id": audit["id"], "decision": "reject"})
    assert _samples(run)[audit["id"]].status == "rejected"
    r = client.post("/api/undo")
    assert r.json() == {"undone": [audit["id"]]}
    assert _samples(run) == before
    with RunStore(run / "run.db") as store:
        assert not [a for a in store.audits("audit") if a.checker == "human"]
    assert audit["id"] in {i["id"] for i in client.get("/api/queue").json()["items"]}
    assert client.post("/api/undo").status_code == 400  # nothing left to undo


def test_filters_and_sorts(client: TestClient) -> None:
    everything = client.get("/api/queue").json()["items"]
    disputed = client.get("/api/queue", params={"reason": "disputed"}).json()["items"]
    assert [i["id"] for i in disputed] == [i["id"] for i in everything if "disputed" in i["reason"]]
    assert len(disputed) == 2
    mid = client.get("/api/queue", params={"min": "0.5", "max": "0.93"}).json()["items"]
    assert sorted(i["confidence"] for i in mid) == [0.55, 0.60, 0.91, 0.92]
    label = everything[0]["label"]
    one = client.get("/api/queue", params={"label": label}).json()["items"]
    assert one
    assert all(i["label"] == label for i in one)
    assert client.get("/api/queue", params={"source": "urls"}).json()["items"] == []
    by_conf = client.get("/api/queue", params={"sort": "confidence"}).json()["items"]
    confs = [i["confidence"] for i in by_conf]
    assert confs == sorted(confs)
    ref = everything[3]
    similar = client.get("/api/queue", params={"sort": "similar", "to": ref["id"]}).json()
    distances = [(ref["hash"] ^ i["hash"]).bit_count() for i in similar["items"]]
    assert similar["items"][0]["id"] == ref["id"]
    assert distances == sorted(distances)
    assert client.get("/api/queue", params={"min": "high"}).status_code == 400


def test_bulk_accepts_the_filtered_held_back_group_above_the_confidence(
    run: Path, client: TestClient
) -> None:
    calls: list[int] = []
    session = ReviewSession(run, audit_size=5, on_decisions=lambda: calls.append(1))
    with TestClient(create_app(session, "127.0.0.1", PORT, TOKEN), base_url=BASE) as c:
        c.headers["X-CSRF-Token"] = TOKEN
        r = c.post(
            "/api/bulk", json={"min_confidence": 0.9, "filter": {"reason": "low confidence"}}
        )
        assert r.json() == {"accepted": 2}  # 0.95 and 0.92; 0.91 is disputed, 0.60 too low
        assert calls == [1]  # the refit hook runs after a bulk accept
        left = c.get("/api/queue").json()["items"]
        assert sorted(i["confidence"] for i in left if i["kind"] == "review") == [
            0.40,
            0.55,
            0.60,
            0.91,
        ]
        assert len([i for i in left if i["kind"] == "audit"]) == 5  # audits are never bulk
        exported = _exported(run)
        stored = _samples(run)
        accepted = [s for s in stored.values() if s.confidence in (0.95, 0.92)]
        assert not accepted  # human labels have confidence 1.0 now
        assert sum(s.annotations[0].labeler == "human" for s in exported.values()) == 2
        c.post("/api/undo")
        assert len([i for i in c.get("/api/queue").json()["items"] if i["kind"] == "review"]) == 6


def test_the_refit_hook_runs_every_k_decisions(run: Path) -> None:
    calls: list[int] = []
    session = ReviewSession(run, audit_size=5, refit_every=2, on_decisions=lambda: calls.append(1))
    ids = [i["id"] for i in session.queue()][:5]
    for sid in ids:
        session.decide(sid, "reject")
    assert len(calls) == 2


def test_a_post_without_the_right_csrf_token_is_refused(client: TestClient, run: Path) -> None:
    item = client.get("/api/queue").json()["items"][0]
    body = {"id": item["id"], "decision": "reject"}
    for headers in ({"X-CSRF-Token": ""}, {"X-CSRF-Token": "wrong"}):
        r = client.post("/api/decisions", json=body, headers=headers)
        assert r.status_code == 403
    del client.headers["X-CSRF-Token"]
    for path in ("/api/decisions", "/api/bulk", "/api/undo", "/api/boxes"):
        assert client.post(path, json=body).status_code == 403
    assert _samples(run)[item["id"]].status == "review"
    page = client.get("/").text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert token is not None
    assert token.group(1) == TOKEN


def test_the_token_is_random_per_server_start(run: Path) -> None:
    session = ReviewSession(run, audit_size=0)
    tokens = set()
    for _ in range(2):
        with TestClient(create_app(session, "127.0.0.1", PORT), base_url=BASE) as c:
            found = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/").text)
            assert found is not None
            tokens.add(found.group(1))
    assert len(tokens) == 2
    assert all(len(t) >= 32 for t in tokens)


@pytest.mark.parametrize(
    "host", ["evil.example:8765", "127.0.0.1:9999", "localhost", "attacker.test", ""]
)
def test_a_foreign_host_header_is_refused(client: TestClient, host: str) -> None:
    r = client.get("/api/queue", headers={"Host": host})
    assert r.status_code == 421
    r = client.post("/api/undo", headers={"Host": host})
    assert r.status_code == 421


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}"])
def test_the_served_address_is_accepted(client: TestClient, host: str) -> None:
    assert client.get("/api/progress", headers={"Host": host}).status_code == 200


def test_images_are_served_by_sample_id_only(client: TestClient, run: Path) -> None:
    item = client.get("/api/queue").json()["items"][0]
    r = client.get(item["image"])
    assert r.status_code == 200
    assert r.content == (run / _samples(run)[item["id"]].blob).read_bytes()
    for path in (
        "/image/unknown",
        "/image/..%2frun.db",
        "/image/%2e%2e%2frun.db",
        "/image/run.db",
        "/image/..%2F..%2Fetc%2Fpasswd",
        f"/image/{item['id'][:10]}",
    ):
        assert client.get(path).status_code == 404, path
    # a path with dot segments is no route to a file of the run
    r = client.get("/image/../run.db")
    assert r.status_code == 404
    assert b"SQLite" not in r.content


def test_a_sample_whose_stored_blob_leaves_the_image_folder_is_not_served(
    client: TestClient, run: Path
) -> None:
    item = client.get("/api/queue").json()["items"][0]
    with RunStore(run / "run.db") as store:
        s = store.find_sample(item["id"])
        assert s is not None
        store.update_samples([s.model_copy(update={"blob": "run.db"})])
    assert client.get(item["image"]).status_code == 404


def test_responses_carry_the_security_headers(client: TestClient) -> None:
    for path in ("/", "/app.js", "/api/queue", "/image/unknown"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "http" not in csp  # no other origin
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    page = client.get("/").text
    assert "http://" not in page
    assert "https://" not in page
    assert "<script>" not in page  # no inline script (the CSP would block it)


def test_bad_requests_are_one_line_errors(client: TestClient, run: Path) -> None:
    item = client.get("/api/queue").json()["items"][0]
    cases = [
        ({"id": item["id"], "decision": "maybe"}, 400),
        ({"id": item["id"], "decision": "relabel"}, 400),
        ({"id": item["id"], "decision": "relabel", "label": "cat"}, 400),
        ({"id": "nope", "decision": "accept"}, 404),
        ({"decision": "accept"}, 400),
        ([1, 2], 400),
    ]
    for body, status in cases:
        r = client.post("/api/decisions", json=body)
        assert r.status_code == status, (body, r.text)
        assert "\n" not in r.json()["error"]
    r = client.post("/api/decisions", content=b"{not json")
    assert r.status_code == 400
    assert _samples(run)[item["id"]].status == "review"


def test_boxes_of_a_detection_run_are_deleted_and_relabelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasetagent.models import BACKENDS
    from test_backends_pipeline import ColourDetector, _squares, _squares_spec

    _squares(tmp_path / "pool", 8)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    spec = _squares_spec(tmp_path / "pool", "detection")
    run = tmp_path / "run"
    build(spec, run, labelers=["colour-squares"], workers=1)
    with RunStore(run / "run.db") as store:
        two = next(s for s in store.samples(status=["labelled"]) if len(s.annotations) >= 2)
        store.update_samples([two.model_copy(update={"status": "review"})])
    session = ReviewSession(run, audit_size=0)
    with TestClient(create_app(session, "127.0.0.1", PORT, TOKEN), base_url=BASE) as c:
        c.headers["X-CSRF-Token"] = TOKEN
        item = c.get("/api/queue").json()["items"][0]
        assert item["id"] == two.id
        assert len(item["objects"]) == len(two.annotations)
        other = next(n for n in spec.class_names if n != two.annotations[0].label)
        r = c.post("/api/boxes", json={"id": two.id, "box": 0, "label": other})
        assert r.status_code == 200, r.text
        r = c.post("/api/boxes", json={"id": two.id, "box": 1})
        assert r.status_code == 200
        assert c.post("/api/boxes", json={"id": two.id, "box": 9}).status_code == 400
        edited = _samples(run)[two.id]
        assert len(edited.annotations) == len(two.annotations) - 1
        assert edited.annotations[0].label == other
        assert edited.annotations[0].labeler.endswith("+human")
        assert edited.status == "review"  # still waits for the person's decision
        assert (
            c.post("/api/decisions", json={"id": two.id, "decision": "accept"}).status_code == 200
        )
    exported = _exported(run)
    assert exported[two.id].annotations == _samples(run)[two.id].annotations
    assert len(exported[two.id].annotations) == len(two.annotations) - 1


def test_cli_refuses_a_remote_host_without_allow_remote(run: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datasetagent", "review", str(run), "--serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--allow-remote" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_serves_on_a_free_port_and_holds_the_run_lock(run: Path) -> None:
    import httpx

    cmd = [sys.executable, "-m", "datasetagent", "review", str(run), "--serve", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)", line)
        assert found is not None, line + (proc.stderr.read() if proc.poll() is not None else "")
        url = found.group(1)
        for _ in range(100):
            try:
                r = httpx.get(url, timeout=5)
                break
            except httpx.ConnectError:
                import time

                time.sleep(0.1)
        assert r.status_code == 200
        assert 'name="csrf-token"' in r.text
        items = httpx.get(url + "api/queue", timeout=5).json()["items"]
        assert len(items) > len(HELD)
        # the server holds the run lock: an export meanwhile is told who has the run
        out = subprocess.run(
            [sys.executable, "-m", "datasetagent", "export", str(run), "-o", str(run.parent / "x")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert f"in use by pid {proc.pid} (review)" in out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_wildcard_host_answers_to_this_machines_names_only() -> None:
    import socket

    from datasetagent.review_app.app import allowed_hosts

    hosts = allowed_hosts("0.0.0.0", 8000)
    assert f"{socket.gethostname().lower()}:8000" in hosts
    assert {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"} <= hosts
    assert "evil.example:8000" not in hosts
    assert allowed_hosts("127.0.0.1", 80) == {"127.0.0.1:80", "localhost:80", "[::1]:80"}
    assert allowed_hosts("192.168.1.5", 80) == {"192.168.1.5:80"}


def test_accepting_a_sample_with_no_class_is_refused_until_relabelled(
    client: TestClient, run: Path
) -> None:
    from datasetagent.agents.review import NO_CLASS

    item = client.get("/api/queue").json()["items"][0]
    with RunStore(run / "run.db") as store:
        s = store.find_sample(item["id"])
        assert s is not None
        store.update_samples([s.model_copy(update={"annotations": ()})])
    r = client.post("/api/decisions", json={"id": item["id"], "decision": "accept"})
    assert r.status_code == 400
    assert NO_CLASS in r.json()["error"]
    assert _samples(run)[item["id"]].status == "review"
    r = client.post("/api/decisions", json={"id": item["id"], "decision": "relabel", "label": "3"})
    assert r.status_code == 200
    assert _samples(run)[item["id"]].label == "3"
