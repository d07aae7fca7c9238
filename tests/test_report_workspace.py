"""`mmal report DIR` (write_workspace_report): one HTML page per round, checked against
numbers computed here from the workspace's own files, and opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3

import numpy as np
import pytest

from serve_support import NAMES, build_workspace

WORDS = {0: ["kitten", "tabby", "cat"], 1: ["puppy", "hound", "dog"], 2: ["sedan", "truck", "car"]}


def make_items(folder, media_dir, n=66, n_train=12, n_test=18):
    """Text + image + (half) audio items; 3 classes; gold labels kept in 'gold'."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {0: (220, 40, 40), 1: (40, 170, 40), 2: (40, 40, 220)}
    img_dir = folder / "img"
    img_dir.mkdir(parents=True)
    rows = []
    for k in range(n):
        c = k % 3
        split = "train" if k < n_train else ("test" if k < n_train + n_test else "pool")
        p = img_dir / f"{k}.png"
        col = np.clip(np.array(colours[c]) + rng.integers(-30, 30, 3), 0, 255)
        Image.new("RGB", (40, 32), tuple(int(v) for v in col)).save(p)
        r = {"id": f"r{k:03d}", "label": c if split != "pool" else None, "split": split, "gold": c,
             "text": f"a photo of a {WORDS[c][k % 3]} ({k})", "image": str(p)}
        if k % 2 == 0:
            r["audio"] = str(media_dir / ("a.wav" if c == 0 else "b.wav"))
        rows.append(r)
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def run_two_rounds(root, items_path, rows, *, spec="entropy:0.5,lsb-lt:0.5", budget=10):
    """init -> encode (text tower only) -> train -> score -> evaluate -> select -> label (gold)
    -> train -> score -> evaluate, in process."""
    import tomli_w

    from mmal.engine import encode_workspace
    from mmal.loop.workspace_round import evaluate_workspace, score_workspace, select_workspace, train_workspace
    from mmal.workspace import Workspace, init_workspace
    from mmal.workspace.annotate import import_labels

    ws_dir = root / "ws"
    ws = init_workspace(ws_dir, items_path, extra_columns=["gold"])  # the oracle's column rides along
    cfg = ws.config
    cfg["task"]["label_names"] = list(NAMES)
    cfg["encoders"] = {"text": "text:minilm"}  # the picture and audio columns are shown, not encoded
    cfg.setdefault("model", {}).update({"fusion": "none"})  # the default late-fusion learner, text only
    cfg.setdefault("train", {}).update({"epochs": 20})
    (ws_dir / "mmal.toml").write_text(tomli_w.dumps(cfg))
    encode_workspace(ws_dir, progress=False)
    for _ in range(2):
        train_workspace(ws_dir, progress=False)
        score_workspace(ws_dir, progress=False)
        evaluate_workspace(ws_dir)
        if (ws_dir / "rounds/1/model.pt").exists():
            break
        out = select_workspace(ws_dir, spec, budget)
        gold = {r["id"]: r["gold"] for r in rows}
        with open(root / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "label", "annotator"])
            sel = [r[0] for r in sqlite3.connect(ws_dir / "state.sqlite").execute(
                "SELECT item_id FROM batch_items WHERE batch_id = ? ORDER BY rank", (out["batch"],))]
            for i in sel[:-2]:  # two items stay unlabeled
                w.writerow([i, NAMES[gold[i]], "ann"])
        import_labels(Workspace(ws_dir), root / "labels.csv")
    return ws_dir


@pytest.fixture(scope="module")
def report_ws(tmp_path_factory, media_dir):
    root = tmp_path_factory.mktemp("report")
    items, rows = make_items(root / "src", media_dir)
    ws = run_two_rounds(root, items, rows)
    from mmal.report.workspace import write_workspace_report

    index = write_workspace_report(ws)
    return ws, rows, index


def _cells(html: str, table_start: str) -> list[list[str]]:
    """Rows of <td>/<th> texts of the first table after ``table_start``."""
    seg = html[html.index(table_start):]
    seg = seg[seg.index("<table"):seg.index("</table>")]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", seg, re.S):
        rows.append([re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)])
    return rows


@pytest.mark.slow
def test_round_pages_match_independent_numbers(report_ws):
    from mmal.workspace.pool_io import load_pool

    ws, rows, index = report_ws
    assert index == ws / "reports" / "index.html" and index.exists()
    assert (ws / "reports/round-0.html").exists() and (ws / "reports/round-1.html").exists()
    gold = {r["id"]: r["gold"] for r in rows}
    for rnd in (0, 1):
        html = (ws / f"reports/round-{rnd}.html").read_text()
        pool = load_pool(ws / f"rounds/{rnd}/pool")
        test = [i for i, k in enumerate(pool.ids.tolist()) if k in gold and next(r for r in rows if r["id"] == k)["split"] == "test"]
        y = np.array([gold[pool.ids[i]] for i in test])
        pred = np.asarray(pool.probs)[test].argmax(1)
        # confusion matrix: rows label, columns prediction, with class names
        conf = _cells(html, "Confusion matrix")
        assert conf[0] == [""] + NAMES
        for t in range(3):
            assert conf[t + 1][0] == NAMES[t]
            assert [int(v) for v in conf[t + 1][1:]] == [int(np.sum((y == t) & (pred == p))) for p in range(3)]
        # per-class precision and recall
        pc = _cells(html, "<h3>Per class")
        for t in range(3):
            name, prec, rec, sup, npred = pc[t + 1]
            assert name == NAMES[t] and int(sup) == int(np.sum(y == t)) and int(npred) == int(np.sum(pred == t))
            exp_p = np.sum((y == t) & (pred == t)) / np.sum(pred == t) if np.sum(pred == t) else None
            exp_r = np.sum((y == t) & (pred == t)) / np.sum(y == t)
            assert prec == ("–" if exp_p is None else f"{exp_p:.3f}") and rec == f"{exp_r:.3f}"
        # metrics with their meaning, and the few-items caveat (18 test items < 30)
        met = json.loads((ws / f"rounds/{rnd}/metrics.json").read_text())
        mrows = {r[0]: r[1:] for r in _cells(html, "<h3>Metrics on")[1:]}
        assert mrows["accuracy"][0] == f"{met['accuracy']:.3f}" == f"{float((pred == y).mean()):.3f}"
        # multiclass metrics only: no class-0-vs-rest AUC/F1/R@P rows, no rank correlations
        assert "f1" not in mrows and "auc" not in mrows and "spearman" not in mrows
        assert not any(k.startswith("r_at_p") for k in mrows)
        assert "equal weight per class" in mrows["macro_f1"][1]
        from sklearn.metrics import balanced_accuracy_score, f1_score
        assert mrows["macro_f1"][0] == f"{f1_score(y, pred, labels=[0, 1, 2], average='macro', zero_division=0):.3f}"
        assert mrows["balanced_accuracy"][0] == f"{balanced_accuracy_score(y, pred):.3f}"
        assert f"only {len(test)} labeled test items (&lt; 30)" in html or f"only {len(test)} labeled test items (< 30)" in html
        assert "±" not in html
    html = (ws / "reports/round-1.html").read_text()
    # the batch of round 1: class mix from the annotators' labels, a grid with audio players
    con = sqlite3.connect(ws / "state.sqlite")
    batch = [r[0] for r in con.execute("SELECT item_id FROM batch_items bi JOIN batches b USING (batch_id) WHERE b.round = 1 ORDER BY rank")]
    labeled = dict(con.execute("SELECT item_id, label FROM labels WHERE round = 1").fetchall())
    info = json.loads(con.execute("SELECT info FROM batches WHERE round = 1").fetchone()[0])
    con.close()
    mix = _cells(html, "<h3>Class mix")
    for t in range(3):
        assert mix[t + 1][0] == NAMES[t] and int(mix[t + 1][1]) == sum(1 for i in batch if labeled.get(i) == t)
    assert mix[4][0] == "not labeled yet" and int(mix[4][1]) == sum(1 for i in batch if i not in labeled) == 2
    grid = html[html.index("<h3>Selected items"):]
    assert grid.count('class="item') == len(batch)
    n_audio = sum(1 for r in rows if r["id"] in batch and r.get("audio"))
    assert n_audio > 0 and grid.count("<audio") == n_audio
    assert grid.count("<img") == len(batch)
    # the lookalike AUC of the lsb-lt part rests on few held-out items: it says so
    if any("lookalike_auc" in (p.get("info") or {}) for p in info.get("parts", [])):
        assert "lookalike AUC rests on about" in html
    idx = index.read_text()
    assert all(f'href="round-{r}.html"' in idx for r in (0, 1))


def test_modality_contributions_and_table3_are_shown(tmp_path, media_dir):
    """A BMMAL batch's Shapley shares appear; LSB rows show the seed beside its neighbours."""
    from mmal.report.workspace import write_workspace_report

    info = {"spec": "bmmal:0.5,lsb-knn:0.5", "parts": [
        {"strategy": "bmmal", "info": {"mean_contribution": {"image": 0.7, "text": 0.3},
                                       "mean_contribution_selected": {"image": 0.4, "text": 0.6},
                                       "mean_weight": {"image": 0.2, "text": 0.8}}},
        {"strategy": "lsb-knn", "info": {"n_seeds": 2}}]}
    ws = build_workspace(tmp_path, n_pool=10, n_batch=6, media_dir=media_dir, info=info)
    html = (write_workspace_report(ws).parent / "round-1.html").read_text()
    contrib = _cells(html, "Per-modality contributions")
    assert contrib[1] == ["image", "0.700", "0.400", "0.200"] and contrib[2] == ["text", "0.300", "0.600", "0.800"]
    # build_workspace's lsb-knn rows (odd ranks) name train items as seeds: it0001, it0003, it0005
    t3 = html[html.index("Seed bad cases and their neighbours"):html.index("<h3>Selected items")]
    for seed in ("it0001", "it0003", "it0005"):
        assert f'<div class="id">{seed}</div>' in t3
    assert t3.count('class="item seed"') == 3
    # round 0's scored pool has 6 labeled test items: the per-class figures carry the caveat
    html0 = (ws / "reports/round-0.html").read_text()
    assert "only 6 labeled test items" in html0 and "±" not in html0 + html
    assert "No scored pool for this round" in html  # round 1 was not trained: said, not hidden


def test_caveat_rules():
    from mmal.report.workspace import caveats, confusion, fmt, per_class

    assert caveats(n_test=30, lookalike_holdout=30, n_batch_labeled=30) == []
    c = caveats(n_test=29, lookalike_holdout=8, n_batch_labeled=5)
    assert len(c) == 3 and "29" in c[0] and "about 8 held-out" in c[1] and "5 labeled" in c[2]
    assert fmt(float("nan")) == "–" and fmt(None) == "–" and fmt(0.5) == "0.500"
    m = confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    pc = per_class(m)
    assert pc[0]["precision"] == 0.5 and pc[1]["precision"] == 0.5 and pc[2]["recall"] == 2 / 3
    assert np.isnan(per_class(confusion([0], [0], 2))[1]["recall"])
    from mmal.report.workspace import selection_notes

    info = {"spec": "entropy:0.5,lsb-lt:0.5", "parts": [
        {"strategy": "entropy", "info": {"n_selectable": 36}},
        {"strategy": "lsb-lt", "info": {"note": "no seed bad cases among labeled items; nothing selected", "shortfall": 5}}],
        "shortfall": 0}
    assert selection_notes(info) == ["lsb-lt: no seed bad cases among labeled items; nothing selected"]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")), reason="needs chromium + chromium-driver")
def test_report_renders_in_headless_chromium(report_ws, tmp_path):
    from selenium.webdriver.common.by import By

    from test_serve_browser import chromium_driver

    ws, rows, index = report_ws
    drv = chromium_driver(1280, 1600)
    try:
        drv.get((ws / "reports/round-1.html").as_uri())
        assert drv.find_element(By.TAG_NAME, "h1").text == "Round 1"
        imgs = drv.find_elements(By.CSS_SELECTOR, ".item img")
        assert imgs and all(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in imgs)
        audios = drv.find_elements(By.TAG_NAME, "audio")
        assert audios and all(a.get_attribute("src").startswith("data:audio/") for a in audios)
        # the embedded audio decodes in the browser
        drv.execute_script("arguments[0].preload = 'auto'; arguments[0].load();", audios[0])
        dur = None
        for _ in range(100):
            dur = drv.execute_script("return arguments[0].duration", audios[0])
            if dur and dur == dur:
                break
            drv.implicitly_wait(0.05)
        assert dur and abs(dur - 0.6) < 0.05
        assert drv.find_elements(By.CSS_SELECTOR, ".caveat")
        assert drv.save_screenshot(str(tmp_path / "report.png"))
        drv.get(index.as_uri())
        assert "Workspace report" in drv.find_element(By.TAG_NAME, "h1").text
    finally:
        drv.quit()


def test_fresh_workspace_gets_an_index_that_says_what_to_run(tmp_path):
    from mmal.report.workspace import write_workspace_report
    from mmal.workspace import init_workspace

    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"id": f"x{i}", "label": i % 2, "split": "train", "text": "t"}) + "\n"
                                                  for i in range(4)))
    init_workspace(tmp_path / "ws", tmp_path / "items.jsonl")
    index = write_workspace_report(tmp_path / "ws")
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html"]
    assert "No round yet: run <code>mmal train</code>" in index.read_text()
