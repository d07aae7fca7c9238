"""`mmal simulate WS` on an existing workspace: the cached features are reused (no encoder is
built or called), the gold labels come from a column of the items or from a label file, and the
workspace is byte-identical afterwards; the items-file form runs the same core.

The towers are replaced by a cheap fake text tower (a subclass of the real
:class:`mmal.encoders.base.Encoder`, returned by ``mmal.encoders._build``), so `mmal encode`
runs its real pipeline in well under a second; the counters wrap the base class's ``__init__``
and ``encode``, which every tower, real or fake, goes through.
"""

import hashlib
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import write_items

CLASSES = {"animal": ["cat", "dog", "horse", "cow"], "food": ["apple", "bread", "cheese", "soup"],
           "vehicle": ["car", "bus", "train", "truck"]}
NAMES = sorted(CLASSES)  # the workspace's classes: the names found in the label column, sorted
N = 60


def _rows():
    rng = np.random.default_rng(3)
    rows = []
    for k in range(N):
        c = NAMES[k % 3]
        split = "test" if k % 4 == 0 else ("train" if k < 9 else "pool")
        rows.append({"id": f"t{k:03d}", "label": c if split != "pool" else None, "split": split,
                     "text": f"a {CLASSES[c][rng.integers(4)]} number {k}", "gold": c})
    return rows


class Counter:
    def __init__(self):
        self.built = self.calls = 0


@pytest.fixture
def towers(monkeypatch):
    """Every tower is the fake one; ``towers.built`` / ``towers.calls`` count constructions and forward
    passes (every encode path, whole-list ``encode`` or streamed ``forward_prepared``, ends in ``_forward``)."""
    import mmal.encoders
    from mmal.encoders.base import Encoder

    count = Counter()
    real_init = Encoder.__init__

    def init(self, *a, **k):
        count.built += 1
        real_init(self, *a, **k)

    class FakeText(Encoder):
        name, modality, dim = "text:minilm", "text", 8

        def _prepare(self, x, i):
            return x

        def _forward(self, batch):  # a word's vector is seeded by its CRC: items share class words
            count.calls += 1
            seqs = [np.stack([np.random.default_rng(zlib.crc32(w.encode())).normal(size=8) for w in s.split()])
                    for s in batch]
            return np.stack([q.mean(0) for q in seqs]), seqs

        def _preprocessing(self):
            return {}

        def _weight_files(self):
            return []

    monkeypatch.setattr(Encoder, "__init__", init)
    monkeypatch.setattr(mmal.encoders, "_build", lambda spec, params: FakeText())
    mmal.encoders.clear_cache()
    yield count
    mmal.encoders.clear_cache()


def cli(*args):
    from mmal.cli import main

    return main([str(a) for a in args])


def make_ws(tmp_path, encode=True, rows=None):
    items = write_items(tmp_path / "src", rows or _rows())
    ws = tmp_path / "ws"
    assert cli("init", ws, "--items", items, "--extra-columns", "gold") == 0
    if encode:
        assert cli("encode", ws) == 0
    return ws


def files(ws: Path) -> dict:
    """{relative path: sha256} of every file under ``ws`` except its simulations/ folder (the output)."""
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ws.rglob("*"))
            if p.is_file() and p.relative_to(ws).parts[0] != "simulations"}


SIM = ("--strategies", "random|entropy", "--init", "6", "--budget", "6", "--rounds", "2", "--seeds", "0,1",
       "--learner", "linear")


def one_run(ws) -> Path:
    runs = sorted((ws / "simulations").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_simulate_ws_calls_no_encoder_and_leaves_the_workspace_byte_identical(tmp_path, towers, capsys):
    ws = make_ws(tmp_path)
    assert towers.built >= 1 and towers.calls >= 1  # encode went through the counted tower
    before = files(ws)
    assert not list(ws.rglob("view.json"))  # a fresh encode leaves the chunks unconsolidated
    towers.built = towers.calls = 0
    assert cli("simulate", ws, "--gold-column", "gold", *SIM) == 0
    assert (towers.built, towers.calls) == (0, 0)
    assert files(ws) == before  # same files, same bytes: no view, no lock file, no database change
    out = one_run(ws)
    res = json.loads((out / "results.json").read_text())
    assert (out / "report.html").exists() and str(out / "report.html") in capsys.readouterr().out
    assert res["config"]["workspace"] == str(ws.resolve()) and res["config"]["gold"] == "column 'gold'"

    # the control: the items-file form encodes (so the counter does count), then runs the same core
    import mmal.encoders

    mmal.encoders.clear_cache()  # else the tower loaded by `mmal encode` above would be reused, not built
    rows = [{**r, "label": r["gold"]} for r in _rows()]
    items = write_items(tmp_path / "old", rows)
    assert cli("simulate", items, "--out", tmp_path / "old-out", *SIM) == 0
    assert towers.built >= 1 and towers.calls >= 1
    old = json.loads((tmp_path / "old-out" / "results.json").read_text())
    # same features, gold labels, splits and learner: the same curves, round by round
    for spec in ("random", "entropy"):
        for seed in ("0", "1"):
            a = res["strategies"][spec]["per_seed"][seed]["rounds"]
            b = old["strategies"][spec]["per_seed"][seed]["rounds"]
            assert [r.get("selected") for r in a] == [r.get("selected") for r in b]
            assert [r["test"]["macro_f1"] for r in a] == pytest.approx([r["test"]["macro_f1"] for r in b])


def test_gold_from_the_column_is_what_the_oracle_reveals(tmp_path, towers):
    ws = make_ws(tmp_path)
    assert cli("simulate", ws, "--gold-column", "gold", *SIM) == 0
    res = json.loads((one_run(ws) / "results.json").read_text())
    gold = {r["id"]: NAMES.index(r["gold"]) for r in _rows()}
    names = res["config"]["class_names"]
    assert names == NAMES
    n_test = sum(1 for r in _rows() if r["split"] == "test")
    assert (res["config"]["n_test"], res["config"]["n_candidates"]) == (n_test, N - n_test)
    for d in res["strategies"].values():
        for run in d["per_seed"].values():
            for r in run["rounds"][1:]:  # pool items selected: their revealed labels are the gold column's
                want = np.bincount([gold[i] for i in r["selected"]], minlength=3).tolist()
                assert r["batch_labels"] == want


def test_progress_line_per_round_and_strategy_and_quiet(tmp_path, towers, capsys, monkeypatch):
    ws = make_ws(tmp_path)
    capsys.readouterr()
    monkeypatch.setenv("MMAL_PROGRESS", "1")
    assert cli("simulate", ws, "--gold-column", "gold", *SIM) == 0
    err = capsys.readouterr().err
    res = json.loads((one_run(ws) / "results.json").read_text())
    pat = re.compile(r"\[simulate\] (\S+) \(strategy (\d)/2, seed (\d)\): round (\d)/2, (\d+) labels, macro_f1 ([0-9.]+)")
    seen = [m.groups() for m in pat.finditer(err)]
    assert len(seen) == 2 * 2 * 3  # strategies x seeds x rounds 0..2
    for spec, k, seed, r, n, val in seen:
        assert ["random", "entropy"].index(spec) + 1 == int(k)
        rec = res["strategies"][spec]["per_seed"][seed]["rounds"][int(r)]
        assert int(n) == 6 + 6 * int(r) == rec["n_labeled"]
        assert float(val) == pytest.approx(rec["test"]["macro_f1"], abs=5e-5)
    for flags, env in (((), "0"), (("--quiet",), "1"), (("-q",), "1")):
        monkeypatch.setenv("MMAL_PROGRESS", env)
        assert cli("simulate", ws, "--gold-column", "gold", *SIM, "--out", tmp_path / f"q{env}{len(flags)}", *flags) == 0
        assert "[simulate]" not in capsys.readouterr().err


def test_report_names_the_classes_and_the_learner_settings(tmp_path, towers):
    import tomllib

    import tomli_w

    ws = make_ws(tmp_path)
    assert cli("simulate", ws, "--gold-column", "gold", *SIM, "--out", tmp_path / "a") == 0
    page = (tmp_path / "a" / "report.html").read_text()
    assert "learner linear (defaults)" in page and "model {}" not in page and "({})" not in page
    assert "classes animal, food, vehicle" in page
    assert all(f"<th>{n}</th>" in page for n in NAMES)  # the table of what the batches revealed
    # the workspace's own [model] settings are used; the header shows the ones that are not defaults
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    cfg["model"] = {"learner": "linear", "C": 0.5, "max_iter": 2000}  # max_iter = 2000 is linear's default
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    sim = [a for a in SIM if a not in ("--learner", "linear")]
    assert cli("simulate", ws, "--gold-column", "gold", *sim, "--out", tmp_path / "b") == 0
    page = (tmp_path / "b" / "report.html").read_text()
    assert "learner linear (C=0.5)" in page
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["config"]["learner_params"] == {"C": 0.5}


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_unknown_gold_column_says_did_you_mean(tmp_path, towers, capsys):
    ws = make_ws(tmp_path)
    before = files(ws)
    capsys.readouterr()
    assert cli("simulate", ws, "--gold-column", "glod", *SIM) == 2
    err = _one_error(capsys)
    assert "--gold-column 'glod'" in err and "did you mean 'gold'" in err
    assert files(ws) == before and not (ws / "simulations").exists()


def test_gold_column_value_that_is_not_a_class(tmp_path, towers, capsys):
    rows = _rows()
    rows[7]["gold"] = "fod"
    ws = make_ws(tmp_path, rows=rows)
    before = files(ws)
    capsys.readouterr()
    assert cli("simulate", ws, "--gold-column", "gold", *SIM) == 2
    err = _one_error(capsys)
    assert "'t007'" in err and "row 8" in err and "column 'gold'" in err and "did you mean 'food'" in err
    assert files(ws) == before and not (ws / "simulations").exists()


def test_gold_file_with_an_id_not_in_the_workspace(tmp_path, towers, capsys):
    ws = make_ws(tmp_path)
    before = files(ws)
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\nt000,animal\nnope,food\n")
    capsys.readouterr()
    assert cli("simulate", ws, "--gold", gold, *SIM) == 2
    err = _one_error(capsys)
    assert str(gold.resolve()) in err and "row 2" in err and "field 'id'" in err and "'nope'" in err
    assert files(ws) == before and not (ws / "simulations").exists()


def test_gold_file_leaves_out_items_without_a_label_and_says_how_many(tmp_path, towers, capsys, monkeypatch):
    ws = make_ws(tmp_path)
    before = files(ws)
    rows = _rows()
    kept = [r for k, r in enumerate(rows) if k % 5 != 1]  # 12 of the 60 items get no gold label
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": r["id"], "label": NAMES.index(r["gold"])}) + "\n" for r in kept))
    monkeypatch.setenv("MMAL_PROGRESS", "1")
    capsys.readouterr()
    assert cli("simulate", ws, "--gold", gold, *SIM) == 0
    err = capsys.readouterr().err
    missing = N - len(kept)
    assert f"{missing} of {N} items have no gold label" in err
    res = json.loads((one_run(ws) / "results.json").read_text())
    assert res["config"]["n_no_gold"] == missing
    n_test = sum(1 for r in kept if r["split"] == "test")
    assert (res["config"]["n_test"], res["config"]["n_candidates"]) == (n_test, len(kept) - n_test)
    never = {r["id"] for k, r in enumerate(rows) if k % 5 == 1}
    for d in res["strategies"].values():
        for run in d["per_seed"].values():
            assert not never & {i for r in run["rounds"][1:] for i in r["selected"] + r.get("top_up", {}).get("ids", [])}
    assert files(ws) == before


def test_workspace_without_encoded_features_says_run_encode(tmp_path, towers, capsys):
    ws = make_ws(tmp_path, encode=False)
    before = files(ws)
    capsys.readouterr()
    assert cli("simulate", ws, "--gold-column", "gold", *SIM) == 2
    err = _one_error(capsys)
    assert f"mmal encode {ws.resolve()}" in err
    assert files(ws) == before and not (ws / "simulations").exists()
    assert (towers.built, towers.calls) == (0, 0)


@pytest.mark.parametrize("flags, words", [
    ((), "--gold-column NAME"),
    (("--gold-column", "gold", "--gold", "x.csv"), "not both"),
    (("--gold-column", "gold", "--task", "binary"), "--task applies to an items file"),
])
def test_workspace_form_flags(tmp_path, towers, capsys, flags, words):
    ws = make_ws(tmp_path)
    before = files(ws)
    capsys.readouterr()
    assert cli("simulate", ws, *flags, *SIM) == 2
    assert words in _one_error(capsys)
    assert files(ws) == before


def test_items_file_form_still_needs_out_and_refuses_gold_flags(tmp_path, towers, capsys):
    items = write_items(tmp_path / "src", [{**r, "label": r["gold"]} for r in _rows()])
    assert cli("simulate", items, *SIM) == 2
    assert "--out is needed" in _one_error(capsys)
    assert cli("simulate", items, "--out", tmp_path / "o", "--gold-column", "gold", *SIM) == 2
    assert "--gold-column applies to a workspace" in _one_error(capsys)
    assert not (tmp_path / "o").exists()


def test_cache_read_writes_nothing_and_returns_what_was_written(tmp_path):
    from mmal.features.cache import FeatureCache

    cache = FeatureCache(tmp_path / "features")
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d", "e"]
    pooled = rng.normal(size=(5, 4)).astype(np.float32)
    seqs = [rng.normal(size=(t, 4)).astype(np.float32) for t in (2, 0, 3, 1, 2)]
    present = np.array([True, False, True, True, True])
    cache.write_chunk("fp", "text", ids[:2], pooled[:2], seqs[:2], present[:2])
    cache.write_chunk("fp", "text", ids[2:], pooled[2:], seqs[2:], present[2:])
    tree = files(tmp_path)
    want = ["d", "a", "c"]
    for _ in range(2):  # first from the chunks (no view yet), then from the view `load` consolidated
        got = cache.read("fp", "text", want)
        assert files(tmp_path) == tree
        assert got.ids.tolist() == want
        for j, i in enumerate(ids.index(w) for w in want):
            np.testing.assert_array_equal(got.pooled[j], pooled[i])
            np.testing.assert_allclose(got.seq[got.offsets[j]:got.offsets[j + 1]], seqs[i], atol=2e-3)  # float16 on disk
            assert got.present[j] == present[i]
        cache.load("fp", "text")
        tree = files(tmp_path)
        assert (tmp_path / "features" / "fp" / "text" / "view.json").exists()


def test_relevance_features_read_only_refuse_to_encode(tmp_path, monkeypatch):
    from conftest import _png

    import mmal.features.hcmrm as hcmrm
    from mmal.errors import WorkspaceError

    calls = []
    monkeypatch.setattr(hcmrm, "encode_visual", lambda *a, **k: calls.append(1))
    _png(tmp_path / "a.png")
    f = tmp_path / "items.csv"
    f.write_text("id,query,label,image,text\na,red cat,2,a.png,a red cat\nb,dog,1,a.png,a dog\n")
    ws = tmp_path / "ws"
    with pytest.raises(WorkspaceError, match=re.escape(f"run `mmal encode {ws}` first")):
        hcmrm.prepare_relevance(f, cache_dir=ws / "features" / "relevance", cache_only=True)
    assert calls == [] and not ws.exists()


def test_class_id_of_a_gold_value():
    from mmal.loop.simulate import class_id

    names = ["cat", "dog"]
    for v in (None, float("nan"), "", "  "):
        assert class_id(v, names, 2) is None
    assert [class_id(v, names, 2) for v in (1, 1.0, "1", " dog ", np.int64(0))] == [1, 1, 1, 1, 0]
    assert "did you mean 'dog'" in class_id("dgo", names, 2)
    for v, words in ((True, "boolean"), (1.5, "not a class id"), (-1, "negative"), (2, "out of range 0..1")):
        assert words in class_id(v, names, 2)
    assert class_id(7, None, 2) == 7  # integer classes: a class with no label yet in the workspace
    assert "largest class id" in class_id(10 ** 9, None, 2)
