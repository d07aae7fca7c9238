"""`mmal serve`: security (token, same-origin, host, path traversal), labels with provenance
and undo, a 200-post load test, and a kill -9 during posts."""

from __future__ import annotations

from pathlib import Path
import http.client
import os
import signal
import sqlite3
import threading
import time

import pytest

from serve_support import NAMES, build_workspace, server

httpx = pytest.importorskip("httpx")


def _labels(ws_dir, rnd=1) -> dict:
    """{item id: (label, source, annotator)} straight from state.sqlite."""
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        rows = con.execute("SELECT item_id, label, source, annotator FROM labels WHERE round = ?", (rnd,)).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _raw_get(base: str, path: str, headers=None) -> int:
    """GET with the path sent byte for byte (no client-side normalisation of '..' or %2e)."""
    host, port = base[len("http://"):].split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        con.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        con.putheader("Host", f"{host}:{port}")
        for k, v in (headers or {}).items():
            con.putheader(k, v)
        con.endheaders()
        r = con.getresponse()
        r.read()
        return r.status
    finally:
        con.close()


@pytest.fixture(scope="module")
def ws_small(tmp_path_factory, media_dir):
    return build_workspace(tmp_path_factory.mktemp("serve"), n_pool=12, n_batch=8, media_dir=media_dir)


@pytest.fixture(scope="module")
def local_server(ws_small):
    with server(ws_small, "--annotator", "default-ann") as s:
        yield s


def _batch_ids(ws_dir):
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank")]
    finally:
        con.close()


def _items_file_paths(ws_dir):
    import pyarrow.parquet as pq

    t = pq.read_table(ws_dir / "items.parquet").to_pylist()
    return {r["id"]: r for r in t}


# ---- security -------------------------------------------------------------------------------
TRAVERSALS = [
    "/media/../../etc/passwd",
    "/media/..%2f..%2fetc%2fpasswd",
    "/media/%2e%2e/%2e%2e/etc/passwd",
    "/media/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/media/%252e%252e/%252e%252e/etc/passwd",
    "/media//etc/passwd",
    "/media/%2Fetc%2Fpasswd/image",
    "/media/etc/passwd",
    "/media/{id}/../../../../etc/passwd",
    "/media/{id}/image/../../../../../etc/passwd",
    "/media/{id}/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/media/{id}/text",
    "/media/{id}/items.parquet",
    "/media/{id}",
    "/media/",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e%2f__init__.py",
    "/static/__init__.py",
    "/etc/passwd",
    "/state.sqlite",
    "/items.parquet",
]


def test_media_only_for_items_table_paths(local_server, ws_small):
    proc, base, _ = local_server
    items = _items_file_paths(ws_small)
    with_image = next(i for i, r in items.items() if r.get("image"))
    with_audio = next(i for i, r in items.items() if r.get("audio"))
    no_audio = next(i for i, r in items.items() if not r.get("audio"))
    # positive control: the bytes of the file that the items table names
    r = httpx.get(f"{base}/media/{with_image}/image")
    assert r.status_code == 200 and r.content == open(items[with_image]["image"], "rb").read()
    r = httpx.get(f"{base}/media/{with_audio}/audio")
    assert r.status_code == 200 and r.content == open(items[with_audio]["audio"], "rb").read()
    assert httpx.get(f"{base}/media/{no_audio}/audio").status_code == 404
    # the media file's own absolute path, in every spelling, is not a route
    abs_path = items[with_image]["image"]
    for p in (f"/media{abs_path}", f"/media/{abs_path}", f"/media/{with_image}{abs_path}",
              "/media/" + abs_path.replace("/", "%2F"), f"/media/{with_image}/" + abs_path.replace("/", "%2F")):
        assert _raw_get(base, p) == 404, p
    for p in TRAVERSALS:
        assert _raw_get(base, p.format(id=with_image)) == 404, p


def test_local_bind_post_needs_token_or_same_origin(local_server, ws_small):
    proc, base, token = local_server
    assert token is None  # loopback: no token in the URL
    item = _batch_ids(ws_small)[0]
    body = {"item_id": item, "label": 1, "annotator": "x"}
    assert httpx.post(f"{base}/api/label", json=body).status_code == 403
    assert httpx.post(f"{base}/api/label", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert httpx.post(f"{base}/api/label", json=body, headers={"Sec-Fetch-Site": "cross-site", "Origin": base}).status_code == 403
    assert httpx.post(f"{base}/api/label", json=body, headers={"X-MMAL-Token": "wrong"}).status_code == 403
    # DNS rebinding: a foreign Host name is refused even for GET
    assert _raw_get(base, "/", headers={}) == 200
    host, port = base[len("http://"):].split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    con.request("GET", "/", headers={"Host": f"evil.example:{port}"})
    assert con.getresponse().status == 400
    con.close()
    assert item not in _labels(ws_small)
    # same origin (what a browser sends for the page's own fetch) is accepted
    r = httpx.post(f"{base}/api/label", json=body, headers={"Origin": base})
    assert r.status_code == 200, r.text
    # the page's embedded token works too (header)
    page = httpx.get(base + "/").text
    tok = page.split('name="mmal-token" content="', 1)[1].split('"', 1)[0]
    r = httpx.post(f"{base}/api/label", json={**body, "label": 2}, headers={"X-MMAL-Token": tok})
    assert r.status_code == 200 and _labels(ws_small)[item] == (2, "serve", "x")
    assert httpx.post(f"{base}/api/undo", json={"item_id": item, "label": 2, "previous": r.json()["previous"]},
                      headers={"Origin": base}).status_code == 200
    assert _labels(ws_small)[item] == (1, "serve", "x")


def test_non_local_bind_requires_token(ws_small):
    with server(ws_small, "--host", "0.0.0.0") as (proc, base, token):
        assert token and len(token) >= 20
        item = _batch_ids(ws_small)[1]
        body = {"item_id": item, "label": 0, "annotator": "y"}
        # no token: refused, even with same-origin headers, and nothing is read
        assert httpx.post(f"{base}/api/label", json=body).status_code == 401
        assert httpx.post(f"{base}/api/label", json=body, headers={"Origin": base, "Sec-Fetch-Site": "same-origin"}).status_code == 401
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(f"{base}/media/{item}/image").status_code == 401
        assert httpx.get(f"{base}/api/state").status_code == 401
        assert httpx.post(f"{base}/api/label", json=body, headers={"X-MMAL-Token": token + "x"}).status_code == 401
        assert item not in _labels(ws_small)
        # the printed URL sets a SameSite=Strict cookie, then the page loads
        with httpx.Client(base_url=base) as c:
            r = c.get("/", params={"token": token})
            assert r.status_code == 303 and "samesite=strict" in r.headers["set-cookie"].lower()
            assert c.get("/").status_code == 200
            # cookie alone is not enough for a write: also same-origin (CSRF)
            assert c.post("/api/label", json=body).status_code == 403
            assert c.post("/api/label", json=body, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
        r = httpx.post(f"{base}/api/label", json={**body, "label": 2}, headers={"X-MMAL-Token": token})
        assert r.status_code == 200
        assert _labels(ws_small)[item] == (2, "serve", "y")
        for p in TRAVERSALS[:8]:
            assert _raw_get(base, p + ("&" if "?" in p else "?") + f"token={token}") == 404, p


def test_labels_undo_restores_previous_row(local_server, ws_small):
    """Undo puts back exactly the row that was there (here: a label from `mmal label`)."""
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels

    proc, base, _ = local_server
    item = _batch_ids(ws_small)[2]
    f = ws_small.parent / "prev.csv"
    f.write_text(f"id,label,round,annotator\n{item},dog,1,bob\n")
    import_labels(Workspace(ws_small), f)
    before = _labels(ws_small)[item]
    assert before[0] == NAMES.index("dog") and before[2] == "bob"
    h = {"Origin": base}
    r = httpx.post(f"{base}/api/label", json={"item_id": item, "label": "car"}, headers=h)  # a class name works too
    assert r.status_code == 200 and r.json()["label"] == 2
    assert _labels(ws_small)[item] == (2, "serve", "default-ann")  # default annotator of the server
    prev = r.json()["previous"]
    assert prev["label"] == 1 and prev["annotator"] == "bob"
    assert httpx.post(f"{base}/api/undo", json={"item_id": item, "label": 2, "previous": prev}, headers=h).status_code == 200
    assert _labels(ws_small)[item] == before
    # undoing again is refused: the stored row is no longer the page's label
    assert httpx.post(f"{base}/api/undo", json={"item_id": item, "label": 2, "previous": prev}, headers=h).status_code == 409
    assert _labels(ws_small)[item] == before
    # bad input: clear 4xx, nothing stored
    for bad in ({"item_id": item, "label": 7}, {"item_id": item, "label": "horse"}, {"item_id": "it0000", "label": 0},
                {"item_id": "nope", "label": 0}):
        assert httpx.post(f"{base}/api/label", json=bad, headers=h).status_code in (400, 404), bad
    assert httpx.post(f"{base}/api/label", content=b"{not json", headers=h).status_code == 400
    assert _labels(ws_small)[item] == before and "it0000" not in _labels(ws_small)


# ---- load and crash ---------------------------------------------------------------------------
@pytest.fixture()
def ws_load(tmp_path):
    return build_workspace(tmp_path, n_pool=200, n_batch=200, with_pool=False)


@pytest.fixture()
def ws_kill(tmp_path):
    return build_workspace(tmp_path, n_pool=400, n_batch=400, with_pool=False)


@pytest.mark.slow
def test_load_200_concurrent_posts_from_20_clients(ws_load):
    ws_big = ws_load
    ids = _batch_ids(ws_big)
    assert len(ids) == 200
    want = {i: (k * 7) % 3 for k, i in enumerate(ids)}
    results, errors = [], []
    barrier = threading.Barrier(20)

    def client(c):
        mine = ids[c::20]  # 10 items per client
        with httpx.Client(base_url=base, timeout=60, headers={"Origin": base}) as cl:
            barrier.wait()
            for i in mine:
                try:
                    r = cl.post("/api/label", json={"item_id": i, "label": want[i], "annotator": f"client{c}"})
                    results.append((i, r.status_code, r.text))
                except Exception as e:  # noqa: BLE001 - record and fail below
                    errors.append(repr(e))

    with server(ws_big) as (proc, base, _):
        threads = [threading.Thread(target=client, args=(c,)) for c in range(20)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - t0
    stderr = proc.stderr.read()
    assert not errors, errors[:3]
    assert len(results) == 200 and all(s == 200 for _, s, _ in results), [r for r in results if r[1] != 200][:3]
    assert "locked" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert not any("locked" in t for _, _, t in results)
    got = _labels(ws_big)
    con = sqlite3.connect(ws_big / "state.sqlite")
    n_rows = con.execute("SELECT COUNT(*) FROM labels WHERE round = 1").fetchone()[0]
    con.close()
    assert n_rows == 200  # nothing duplicated, nothing lost
    assert {i: v[0] for i, v in got.items()} == want
    assert all(v[1] == "serve" and v[2] == f"client{ids.index(i) % 20}" for i, v in got.items())
    print(f"load: 200 posts from 20 clients in {elapsed:.2f} s")


@pytest.mark.slow
def test_kill_9_during_posts_loses_no_acknowledged_label(ws_kill):
    ws_big = ws_kill
    ids = _batch_ids(ws_big)
    acked, lock, stop = {}, threading.Lock(), threading.Event()

    def client(c):
        with httpx.Client(base_url=base, timeout=10, headers={"Origin": base}) as cl:
            for i in ids[c::8]:
                if stop.is_set():
                    return
                try:
                    r = cl.post("/api/label", json={"item_id": i, "label": 1, "annotator": "k9"})
                except Exception:  # noqa: BLE001 - the server is gone: stop posting
                    return
                if r.status_code == 200:
                    with lock:
                        acked[i] = r.json()["label"]

    with server(ws_big) as (proc, base, _):
        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        t0 = time.time()
        while len(acked) < 60 and time.time() - t0 < 60:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: other posts are in flight
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert proc.returncode == -signal.SIGKILL
    assert 60 <= len(acked) < len(ids), len(acked)  # killed while posts remained
    con = sqlite3.connect(ws_big / "state.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    got = _labels(ws_big)
    lost = [i for i, lab in acked.items() if got.get(i, (None,))[0] != lab]
    assert not lost, lost
    # the workspace still serves after the crash, and reports what is stored
    with server(ws_big) as (proc, base, _):
        st = httpx.get(base + "/api/state").json()
    assert set(acked) <= set(st["labels"]) and st["labeled"] == len(_labels(ws_big))


def test_start_errors_are_one_line_exit_2(tmp_path, ws_small):
    """No batch yet, a busy port, not a workspace: one clear stderr line, exit 2, no traceback."""
    import socket
    import subprocess
    import sys

    from serve_support import _env

    def run(*args):
        return subprocess.run([sys.executable, "-m", "mmal.serve", *map(str, args)], capture_output=True, text=True,
                              env=_env(), timeout=60)

    nobatch = build_workspace(tmp_path / "nb", n_pool=3, n_batch=0)
    con = sqlite3.connect(nobatch / "state.sqlite")
    with con:
        con.execute("DELETE FROM batch_items")
        con.execute("DELETE FROM batches")
    con.close()
    r = run(nobatch, "--port", "0")
    assert r.returncode == 2 and "no batch to review" in r.stderr and "mmal select" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = run(ws_small, "--port", busy.getsockname()[1])
    finally:
        busy.close()
    assert r.returncode == 2 and "--port" in r.stderr and "Traceback" not in r.stderr
    r = run(tmp_path / "nothing-here", "--port", "0")
    assert r.returncode == 2 and "not a workspace" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_posts_wait_for_a_concurrent_mmal_label_import(tmp_path):
    """Another process (`mmal label`) holds the write lock for ~2 s: the page's posts wait
    and succeed (busy timeout + retry), none fails with "database is locked"."""
    import subprocess
    import sys

    from serve_support import _env

    ws = build_workspace(tmp_path, n_pool=40, n_batch=20, with_pool=False)
    con = sqlite3.connect(ws / "state.sqlite")
    outside = [r[0] for r in con.execute(
        "SELECT id FROM items WHERE split = 'pool' AND id NOT IN (SELECT item_id FROM batch_items) ORDER BY id")][:8]
    con.close()
    f = tmp_path / "file.csv"
    f.write_text("id,label,round\n" + "".join(f"{i},0,1\n" for i in outside))
    helper = Path(__file__).with_name("slow_import.py")
    ids = _batch_ids(ws)
    with server(ws) as (proc, base, _):
        imp = subprocess.Popen([sys.executable, str(helper), str(ws), str(f), "0.3", "--allow-unbatched"], env=_env(),
                               stderr=subprocess.PIPE, text=True)
        marker = f.with_name(f.name + ".importing")
        t0 = time.time()
        while not marker.exists() and time.time() - t0 < 30:  # the import now holds BEGIN IMMEDIATE
            time.sleep(0.01)
        assert marker.exists()
        results = []

        def post(i):
            r = httpx.post(f"{base}/api/label", json={"item_id": i, "label": 2, "annotator": "p"}, headers={"Origin": base}, timeout=60)
            results.append((r.status_code, time.time() - t0))

        threads = [threading.Thread(target=post, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert imp.wait(60) == 0, imp.stderr.read()
    assert [s for s, _ in results] == [200] * len(ids)
    assert max(dt for _, dt in results) > 1.0  # they did wait for the import's transaction
    got = _labels(ws)
    assert {i: got[i][0] for i in ids} == {i: 2 for i in ids} and {i: got[i][0] for i in outside} == {i: 0 for i in outside}
    assert "locked" not in proc.stderr.read()
