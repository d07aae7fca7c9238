"""The review page's data-set views: filters and paging, suspect labels, the embedding map,
earlier batches and relabels, each checked against a computation written here from the
workspace's own files (state.sqlite, items.parquet, rounds/<n>/pool/*.npy)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from serve_support import NAMES, build_workspace, scored_pool as _scored_pool

httpx = pytest.importorskip("httpx")

TOKEN = "tok"


# ---- pure logic -----------------------------------------------------------------------------
def _arrays(n=300, c=4, seed=1):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c), size=n)
    labels = np.where(rng.random(n) < 0.4, rng.integers(0, c, n), -1)
    pred = probs.argmax(1)
    conf = probs.max(1)
    pred[::17], conf[::17] = -1, np.nan  # items without a pool row
    split = rng.choice(["train", "pool", "test"], n)
    ids = np.array([f"x{i}" for i in range(n)])
    return ids, probs, labels, pred, conf, split


def test_filters_match_brute_force():
    from mmal.serve.dataset_view import ItemQuery, filter_rows

    ids, _, labels, pred, conf, split = _arrays()
    in_batch = np.arange(len(ids)) % 5 == 0
    cases = [ItemQuery(), ItemQuery(label=2), ItemQuery(labeled=False), ItemQuery(labeled=True, pred=1),
             ItemQuery(min_conf=0.5), ItemQuery(max_conf=0.45, split="pool"), ItemQuery(min_conf=0.4, max_conf=0.6, label=0),
             ItemQuery(item_id="x42"), ItemQuery(pred=3, labeled=True, min_conf=0.3)]
    for q in cases:
        want = []
        for i in range(len(ids)):
            ok = (q.item_id is None or ids[i] == q.item_id) and (q.label is None or labels[i] == q.label)
            ok &= q.labeled is None or ((labels[i] != -1) == q.labeled)
            ok &= q.pred is None or pred[i] == q.pred
            ok &= q.split is None or split[i] == q.split
            ok &= q.min_conf is None or (conf[i] == conf[i] and conf[i] >= q.min_conf)
            ok &= q.max_conf is None or (conf[i] == conf[i] and conf[i] <= q.max_conf)
            if ok:
                want.append(i)
        got = filter_rows(q, ids=ids, labels=labels, pred=pred, conf=conf, split=split)
        assert got.tolist() == want, q
        assert len(want) > 0 or q.item_id  # every case selects something (a filter that matches nothing tests nothing)
        got_b = filter_rows(q, ids=ids, labels=labels, pred=pred, conf=conf, split=split, in_batch=in_batch)
        assert got_b.tolist() == [i for i in want if i % 5 == 0]


def test_sort_by_confidence_and_paging():
    from mmal.serve.dataset_view import ItemQuery, filter_rows, page

    ids, _, labels, pred, conf, split = _arrays()
    asc = filter_rows(ItemQuery(sort="conf"), ids=ids, labels=labels, pred=pred, conf=conf, split=split)
    have = [i for i in range(len(ids)) if conf[i] == conf[i]]
    want = sorted(have, key=lambda i: (conf[i], i)) + [i for i in range(len(ids)) if conf[i] != conf[i]]
    assert asc.tolist() == want
    desc = filter_rows(ItemQuery(sort="-conf"), ids=ids, labels=labels, pred=pred, conf=conf, split=split)
    assert desc.tolist() == sorted(have, key=lambda i: (-conf[i], i)) + want[len(have):]
    pages = [page(asc, off, 37).tolist() for off in range(0, len(asc) + 37, 37)]
    assert sum(pages, []) == asc.tolist() and pages[-1] == [] and all(len(p) == 37 for p in pages[:-2])


def test_parse_item_query_errors_are_one_line():
    from mmal.serve.dataset_view import MAX_LIMIT, QueryError, parse_item_query

    names = ["cat", "dog", "car"]
    q = parse_item_query({"label": "dog", "pred": "2", "labeled": "no", "min_conf": "0.2", "max_conf": "0.9",
                          "batch": "3", "round": "1", "offset": "10", "limit": str(MAX_LIMIT), "sort": "-conf", "token": "t"},
                         names, batch_ids=[3], rounds=[1])
    assert (q.label, q.pred, q.labeled, q.min_conf, q.max_conf, q.batch, q.round, q.offset, q.limit, q.sort) == \
        (1, 2, False, 0.2, 0.9, 3, 1, 10, MAX_LIMIT, "-conf")
    assert parse_item_query({"label": "", "limit": ""}, names).limit == 50  # an empty form field is "not set"
    bad = {"label": "horse", "pred": "7", "labeled": "maybe", "min_conf": "1.5", "max_conf": "nan", "offset": "-1",
           "limit": str(MAX_LIMIT + 1), "batch": "9", "round": "x", "sort": "name", "colour": "red", "split": "val"}
    for k, v in bad.items():
        with pytest.raises(QueryError) as e:
            parse_item_query({k: v}, names, batch_ids=[3], rounds=[1])
        msg = str(e.value)
        assert "\n" not in msg and (k in msg or v in msg), (k, msg)
    with pytest.raises(QueryError, match="min_conf 0.8 is larger than max_conf 0.2"):
        parse_item_query({"min_conf": "0.8", "max_conf": "0.2"}, names)


def test_suspects_ranked_by_self_confidence_like_cleanlab():
    """predicted != given, lowest p(given label) first: written here with plain loops."""
    from mmal.serve.dataset_view import self_confidence, suspect_rows

    _, probs, labels, _, _, _ = _arrays(n=400, c=5, seed=3)
    eligible = np.arange(400) % 3 != 0
    got = suspect_rows(probs, labels, eligible)
    issues = [i for i in range(400) if labels[i] >= 0 and eligible[i] and int(np.argmax(probs[i])) != labels[i]]
    want = sorted(issues, key=lambda i: (probs[i][labels[i]], i))
    assert got.tolist() == want and len(want) > 20
    sc = self_confidence(probs, labels)
    assert all(sc[i] == probs[i][labels[i]] for i in want) and np.isnan(sc[labels < 0]).all()


def test_judged_probabilities_prefers_out_of_sample():
    from mmal.serve.dataset_view import judged_probabilities

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=6)
    at = np.full((6, 3), np.nan)
    at[[1, 2, 4]] = rng.dirichlet(np.ones(3), size=3)
    split = np.array(["train", "train", "pool", "test", "pool", "train"])
    scored = np.array([0, 1, -1, 2, 1, 0])  # item 2 was unlabeled when the pool was scored
    judged, source = judged_probabilities(probs, split=split, at_selection=at, scored_labels=scored)
    assert source.tolist() == ["in-sample", "at-selection", "labeled-after-scoring", "held-out", "at-selection", "in-sample"]
    for i, s in enumerate(source):
        want = at[i] if s == "at-selection" else probs[i]
        assert np.array_equal(judged[i], want)
    _, only = judged_probabilities(probs, split=np.array(["train"] * 6))
    assert set(only) == {"in-sample"}


def test_pca_matches_numpy_svd():
    from mmal.serve.dataset_view import pca_2d, sample_rows

    rng = np.random.default_rng(5)
    for m, d in ((200, 12), (20, 50)):  # more items than dimensions, and fewer
        x = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) + 3.0
        xy, explained = pca_2d(x)
        xc = x - x.mean(0)
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        for k in range(2):
            sign = np.sign(vt[k][np.argmax(np.abs(vt[k]))])  # the documented convention: largest loading positive
            assert np.allclose(xy[:, k], sign * u[:, k] * s[k], atol=1e-8)
        assert np.allclose(explained, s[:2] ** 2 / (s ** 2).sum())
        assert np.allclose(pca_2d(x[::-1].copy())[0][::-1], xy, atol=1e-8)  # row order does not flip an axis
    rows = sample_rows(10_000, 300)
    assert len(set(rows.tolist())) == 300 and np.array_equal(rows, np.sort(rows)) and np.array_equal(rows, sample_rows(10_000, 300))
    assert np.array_equal(sample_rows(50, 300), np.arange(50))


# ---- the routes on a workspace --------------------------------------------------------------
@pytest.fixture()
def ws(tmp_path, media_dir):
    """A workspace with a round-1 batch (8 items, 6 labeled), a scored pool of round 1 with an
    embedding and at-selection probabilities, and a second batch in round 2."""
    from mmal.pool import Selection
    from mmal.workspace import Workspace, state
    from mmal.workspace.annotate import record_batch

    ws_dir = build_workspace(tmp_path, n_pool=30, n_batch=8, media_dir=media_dir)
    w = Workspace(ws_dir)
    con = sqlite3.connect(ws_dir / "state.sqlite")
    b1 = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank")]
    con.close()
    state.put_labels(w, [(k, 1, j % 3) for j, k in enumerate(b1[:6])], source="test")
    known = w.current_labels()
    # items b1[4], b1[5] were labeled after the pool was scored
    _scored_pool(ws_dir, 1, seed=7, labeled_at_scoring={k: v for k, v in known.items() if k not in b1[4:6]})
    rest = [k for k in w.items.column("id").to_pylist() if k.startswith("it") and k not in b1 and k not in known][:5]
    record_batch(w, Selection(ids=np.array(rest), strategy=np.array(["entropy"] * 5, dtype=object),
                              score=np.linspace(1, 0, 5), reason=np.array([""] * 5, dtype=object)),
                 budget=5, round_=2, info={"spec": "entropy"})
    return ws_dir


@pytest.fixture()
def client(ws):
    from starlette.testclient import TestClient

    from mmal.serve.app import create_app

    app = create_app(ws, token=TOKEN, require_token=False, annotator="tester")
    with TestClient(app, base_url="http://127.0.0.1") as c:
        c.headers["X-MMAL-Token"] = TOKEN
        yield c


def _db(ws_dir, sql, args=()):
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _files(ws_dir):
    """Everything the views read, straight from the files: ids, split, current labels, pool arrays."""
    import pyarrow.parquet as pq

    t = pq.read_table(ws_dir / "items.parquet").to_pylist()
    ids = [r["id"] for r in t]
    split = {r["id"]: r["split"] for r in t}
    cur = {}
    for item, rnd, lab in _db(ws_dir, "SELECT item_id, round, label FROM labels ORDER BY round"):
        cur[item] = lab  # the highest round wins
    folder = ws_dir / "rounds" / "1" / "pool"
    pids = pq.read_table(folder / "ids.parquet").column("id").to_pylist()
    arr = {n: np.load(folder / f"{n}.npy") for n in ("probs", "embedding", "labels", "extra.at_selection_probs")}
    return ids, split, cur, {k: i for i, k in enumerate(pids)}, arr


def test_items_route_filters_and_pages_like_the_files(client, ws):
    ids, split, cur, prow, arr = _files(ws)
    probs = arr["probs"].astype(np.float64)
    batch2 = [r[0] for r in _db(ws, "SELECT item_id FROM batch_items WHERE batch_id = 2 ORDER BY rank")]
    cases = [({}, lambda k: True),
             ({"label": "dog"}, lambda k: cur.get(k) == 1),
             ({"labeled": "no", "pred": "car"}, lambda k: k not in cur and probs[prow[k]].argmax() == 2),
             ({"min_conf": "0.6", "max_conf": "0.9"}, lambda k: 0.6 <= float(probs[prow[k]].max()) <= 0.9),
             ({"batch": "2"}, lambda k: k in batch2),
             ({"round": "1", "labeled": "yes"}, lambda k: k in cur and k in
              {r[0] for r in _db(ws, "SELECT item_id FROM batch_items WHERE batch_id = 1")})]
    for params, keep in cases:
        want = [k for k in ids if keep(k)]
        got, off = [], 0
        while True:
            r = client.get("/api/items", params={**params, "offset": off, "limit": 7})
            assert r.status_code == 200, r.text
            j = r.json()
            assert j["total"] == len(want)
            got += [it["id"] for it in j["items"]]
            off += 7
            if off >= j["total"]:
                break
        assert got == want and want, params
    it = client.get("/api/items", params={"id": batch2[0]}).json()["items"][0]
    p = probs[prow[batch2[0]]]
    assert it["pred_name"] == NAMES[int(p.argmax())] and it["confidence"] == pytest.approx(float(p.max()), abs=1e-4)
    assert it["batches"] == [2] and it["label"] is None and it["text"].startswith("a ")
    labeled = client.get("/api/items", params={"label": "car"}).json()["items"][0]
    assert labeled["label_name"] == "car" and [t[0] for t in labeled["top"]][0] == labeled["pred_name"]


def test_bad_query_parameters_are_400_with_one_line(client):
    for params in ({"limit": "100000"}, {"limit": "0"}, {"offset": "x"}, {"label": "horse"}, {"pred": "9"},
                   {"min_conf": "2"}, {"min_conf": "0.9", "max_conf": "0.1"}, {"batch": "77"}, {"round": "9"},
                   {"labeled": "perhaps"}, {"sort": "id"}, {"nosuch": "1"}):
        r = client.get("/api/items", params=params)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), params
        err = r.json()["error"]
        assert isinstance(err, str) and "\n" not in err and len(err) < 200 and set(r.json()) == {"error"}, err
    for route, params in (("/api/suspects", {"limit": "-3"}), ("/api/suspects", {"in_sample": "maybe"}),
                          ("/api/map", {"colour": "x"}), ("/api/state", {"batch": "abc"})):
        r = client.get(route, params=params)
        assert r.status_code == 400 and "\n" not in r.json()["error"], (route, params)
    assert client.get("/api/state", params={"batch": "55"}).status_code == 404


def _expected_suspects(ws, in_sample=False):
    """Suspects computed here: judge each labeled item by its out-of-sample probabilities."""
    ids, split, cur, prow, arr = _files(ws)
    out = []
    for k in ids:
        if k not in cur:
            continue
        i = prow[k]
        at = arr["extra.at_selection_probs"][i]
        if split[k] == "test":
            p, src = arr["probs"][i], "held-out"
        elif arr["labels"][i] < 0:
            p, src = arr["probs"][i], "labeled-after-scoring"
        elif np.isfinite(at).all():
            p, src = at, "at-selection"
        else:
            p, src = arr["probs"][i], "in-sample"
        if src == "in-sample" and not in_sample:
            continue
        if int(np.argmax(p)) != cur[k]:
            out.append((float(p[cur[k]]), ids.index(k), k, src))
    return [(k, src, sc) for sc, _, k, src in sorted(out)]


def test_suspects_route_ranks_out_of_sample_disagreements(client, ws):
    for in_sample in (False, True):
        j = client.get("/api/suspects", params={"in_sample": "yes" if in_sample else "no", "limit": 500}).json()
        want = _expected_suspects(ws, in_sample)
        assert [(it["id"], it["source"]) for it in j["items"]] == [(k, s) for k, s, _ in want] and want
        assert [it["self_confidence"] for it in j["items"]] == pytest.approx([sc for _, _, sc in want], abs=1e-4)
        assert all(it["label_name"] == NAMES[it["label"]] and it["judged_pred_name"] == NAMES[it["judged_pred"]]
                   for it in j["items"])
    assert {s for _, s, _ in _expected_suspects(ws, True)} >= {"held-out", "in-sample"}
    assert j["n_out_of_sample"] == sum(v for k, v in j["counts"].items() if k != "in-sample") and j["note"] is None


def test_suspects_say_when_only_in_sample(tmp_path):
    """A pool scored with every label known and no at-selection view: the view says so."""
    from starlette.testclient import TestClient

    from mmal.serve.app import create_app
    from mmal.workspace import Workspace

    ws_dir = build_workspace(tmp_path, n_pool=6, n_batch=3, n_test=0)
    _scored_pool(ws_dir, 1, seed=2, labeled_at_scoring=Workspace(ws_dir).current_labels(), with_at_selection=False)
    with TestClient(create_app(ws_dir, token=TOKEN, require_token=False), base_url="http://127.0.0.1") as c:
        j = c.get("/api/suspects").json()
        assert j["n_out_of_sample"] == 0 and j["total"] == 0 and "only in-sample" in j["note"]
        j2 = c.get("/api/suspects", params={"in_sample": "1"}).json()
        assert j2["total"] > 0 and {it["source"] for it in j2["items"]} == {"in-sample"}


def test_map_is_pca_of_the_stored_embedding_and_follows_a_rescore(client, ws, monkeypatch):
    from mmal.serve import dataset_view

    ids, _, cur, prow, arr = _files(ws)

    def check(j, arr):
        rows = [prow[k] for k in j["ids"]]
        x = arr["embedding"][rows].astype(np.float64)
        xc = x - x.mean(0)
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        for k, axis in enumerate(("x", "y")):
            sign = np.sign(vt[k][np.argmax(np.abs(vt[k]))])
            assert np.allclose(j[axis], sign * u[:, k] * s[k], atol=1e-3)
        assert j["label"] == [cur.get(k, -1) for k in j["ids"]]
        assert j["pred"] == [int(arr["probs"][prow[k]].argmax()) for k in j["ids"]]

    j = client.get("/api/map").json()
    assert j["ids"] == ids and j["n_shown"] == j["n_total"] == len(ids) and not j["sampled"]
    check(j, arr)
    _scored_pool(ws, 1, seed=99, labeled_at_scoring=cur)  # a re-score: a new pool version
    _, _, _, prow, arr2 = _files(ws)
    j2 = client.get("/api/map").json()
    assert j2["pool"]["version"] != j["pool"]["version"]
    check(j2, arr2)
    monkeypatch.setattr(dataset_view, "MAP_POINTS", 10)
    _scored_pool(ws, 1, seed=100, labeled_at_scoring=cur)
    j3 = client.get("/api/map").json()
    assert j3["sampled"] and j3["n_shown"] == 10 and j3["n_total"] == len(ids) and set(j3["ids"]) <= set(ids)
    rng_rows = np.sort(np.random.default_rng(0).choice(len(ids), 10, replace=False))
    assert j3["ids"] == [ids[i] for i in rng_rows]  # the items table has every item in the pool, in order


def test_relabel_from_dataset_scope_and_undo(client, ws):
    """scope 'dataset': any non-test item, stored under the current round by the one label writer."""
    train_item = "it0001"  # gold label 1 (dog) from the items file, round 0
    assert _db(ws, "SELECT label, round FROM labels WHERE item_id = ?", (train_item,)) == [(1, 0)]
    cur_round = max(r[0] for r in _db(ws, "SELECT MAX(round) FROM labels UNION SELECT MAX(round) FROM batches"))
    r = client.post("/api/label", json={"item_id": train_item, "label": "car", "scope": "dataset", "annotator": "ann"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["round"] == cur_round == 2 and j["label"] == 2 and j["label_name"] == "car" and j["previous"] is None
    assert "gold" in j["warning"]
    assert _db(ws, "SELECT label, source, annotator FROM labels WHERE item_id = ? AND round = 2", (train_item,)) == [(2, "serve", "ann")]
    hist = _db(ws, "SELECT old_label, new_label, source FROM label_history WHERE item_id = ? ORDER BY seq", (train_item,))
    assert hist[-1] == (None, 2, "serve")
    assert client.get("/api/items", params={"id": train_item}).json()["items"][0]["label_name"] == "car"
    u = client.post("/api/undo", json={"item_id": train_item, "label": 2, "previous": None, "scope": "dataset", "round": 2})
    assert u.status_code == 200 and u.json()["label"] == 1
    assert _db(ws, "SELECT label, round FROM labels WHERE item_id = ?", (train_item,)) == [(1, 0)]
    # refused: test items (gold for evaluate), unknown items, both scope and batch; nothing stored
    test_item = next(k for k, s in _files(ws)[1].items() if s == "test")
    for body, code in (({"item_id": test_item, "label": 0, "scope": "dataset"}, 400),
                       ({"item_id": "nope", "label": 0, "scope": "dataset"}, 404),
                       ({"item_id": train_item, "label": 0, "scope": "dataset", "batch": 1}, 400),
                       ({"item_id": train_item, "label": 0, "scope": "everything"}, 400),
                       ({"item_id": train_item, "label": 0}, 404)):  # without a scope: only the current batch
        r = client.post("/api/label", json=body)
        assert r.status_code == code and "\n" not in r.json()["error"], (body, r.text)
    assert _db(ws, "SELECT COUNT(*) FROM labels WHERE source = 'serve'") == [(0,)]


def test_earlier_batch_page_and_its_labels(client, ws):
    b1 = [r[0] for r in _db(ws, "SELECT item_id FROM batch_items WHERE batch_id = 1 ORDER BY rank")]
    page = client.get("/batch/1")
    assert page.status_code == 200 and '<meta name="mmal-batch" content="1">' in page.text and b1[7] in page.text
    cur = client.get("/")
    assert "Batch 2" in cur.text and "mmal-batch" not in cur.text and 'href="/batch/1"' in cur.text
    assert client.get("/batch/9").status_code == 404
    r = client.post("/api/label", json={"item_id": b1[7], "label": "dog", "batch": 1})
    assert r.status_code == 200 and r.json()["round"] == 1 and r.json()["labeled"] == 7 and r.json()["total"] == 8
    assert _db(ws, "SELECT round, label FROM labels WHERE item_id = ?", (b1[7],)) == [(1, 1)]
    assert client.get("/api/state", params={"batch": 1}).json()["labeled"] == 7
    assert client.post("/api/label", json={"item_id": b1[7], "label": 0}).status_code == 404  # not in the current batch 2
    assert client.post("/api/label", json={"item_id": b1[7], "label": 0, "batch": 2}).status_code == 404
    assert client.post("/api/label", json={"item_id": b1[7], "label": 0, "batch": "1"}).status_code == 400
    bs = client.get("/api/batches").json()["batches"]
    assert [(b["batch"], b["round"], b["size"], b["labeled"]) for b in bs] == [(2, 2, 5, 0), (1, 1, 8, 7)]


def test_pages_render_with_class_names(client, ws):
    for path in ("/dataset", "/suspects"):
        r = client.get(path)
        assert r.status_code == 200 and "/static/dataset.js" in r.text
        names = json.loads(r.text.split("data-names='", 1)[1].split("'", 1)[0])
        assert names == NAMES
    assert all(f'<option value="{n}">{n}</option>' in client.get("/dataset").text for n in NAMES)
    assert client.get("/static/dataset.js").status_code == 200 and client.get("/static/other.js").status_code == 404


def test_token_mode_covers_the_new_routes(ws):
    from starlette.testclient import TestClient

    from mmal.serve.app import create_app

    with TestClient(create_app(ws, token=TOKEN, require_token=True), base_url="http://10.0.0.5") as c:
        for path in ("/dataset", "/suspects", "/batch/1", "/api/items", "/api/suspects", "/api/map", "/api/batches"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-MMAL-Token": TOKEN}).status_code == 200, path
        assert c.get("/api/items", params={"token": TOKEN, "limit": 3}).json()["limit"] == 3  # ?token= is not a filter
        r = c.post("/api/label", json={"item_id": "it0001", "label": 0, "scope": "dataset"}, headers={"Origin": "http://10.0.0.5"})
        assert r.status_code == 401  # no token: nothing stored
    assert _db(ws, "SELECT COUNT(*) FROM labels WHERE source = 'serve'") == [(0,)]


def test_a_torn_pool_is_503_with_one_line(client, ws):
    assert client.get("/api/items").status_code == 200
    (ws / "rounds" / "1" / "pool" / "probs.npy").write_bytes(b"not an npy file")
    for path in ("/api/items", "/api/suspects", "/api/map"):
        r = client.get(path)
        assert r.status_code == 503 and "unreadable scored pool" in r.json()["error"] and "\n" not in r.json()["error"], path
    r = client.get("/dataset")
    assert r.status_code == 503 and "mmal score" in r.text
