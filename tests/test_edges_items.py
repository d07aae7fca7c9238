"""The edges of the items file, ``init`` and labels: nothing dropped or rewritten in silence.

- ``init`` refuses a column it does not read (with a "did you mean"), unless it is kept as
  metadata on purpose (``--extra-columns``, ``--all-extra-columns``, or declared by the file
  itself, as the dataset builders do); it says what each media column feeds;
- ``--classes`` declares the classes and refuses a misspelt one;
- values keep their type or are refused (bytes text, float ids, non-string annotators);
- every label change is kept in ``label_history``; overwriting a gold label warns;
- errors name the row of a non-UTF-8 byte, and a label file's bad rows are all reported.

Workspaces are text-only and no encoder is loaded.
"""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, write_items
from test_bad_inputs import assert_one_line_refusal


def _items(n=6):
    """Two train items per class (cat, dog), the rest pool."""
    rows = []
    for k in range(n):
        lab = ("cat", "dog")[k % 2] if k < 4 else None
        rows.append({"id": f"i{k}", "label": lab, "split": "train" if lab else "pool", "text": f"item {k}"})
    return rows


@pytest.fixture
def ws(tmp_path):
    """A text-only workspace: i0..i3 labeled in the items file (cat, dog, cat, dog), i4, i5 in the pool."""
    w = tmp_path / "ws"
    r = run_cli("init", w, "--items", write_items(tmp_path / "src", _items()))
    assert r.returncode == 0, r.stderr
    return w


def _refused_init(tmp_path, items, words, *extra):
    new = tmp_path / "new-ws"
    r = run_cli("init", new, "--items", items, *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not new.exists()
    return lines[0]


# ---- columns -----------------------------------------------------------------------------------
@pytest.mark.parametrize("typo,meant", [("class", "label"), ("imgae", "image"), ("Text", "text")])
def test_unknown_column_refused_with_did_you_mean(tmp_path, typo, meant):
    rows = [{"id": f"a{k}", "text": "t", typo: ("cat", "dog")[k % 2]} for k in range(4)]
    items = write_items(tmp_path / "src", rows)
    _refused_init(tmp_path, items, [str(items), f"column '{typo}'", f"did you mean '{meant}'",
                                    f"--extra-columns {typo}"])


def test_several_unknown_columns_in_one_line(tmp_path):
    rows = [{"id": "a", "label": 0, "text": "t", "class": "x", "imgae": "y", "notes": "z"},
            {"id": "b", "label": 1, "text": "u", "class": "x", "imgae": "y", "notes": "z"}]
    line = _refused_init(tmp_path, write_items(tmp_path / "src", rows),
                         ["'class' (did you mean 'label'?)", "'imgae' (did you mean 'image'?)", "'notes'",
                          "--extra-columns class,imgae,notes"])
    assert "'notes' (did you mean" not in line


def test_extra_columns_kept_on_purpose(tmp_path):
    rows = [{"id": f"a{k}", "label": k % 2, "text": f"t{k}", "gold": k % 2, "note": f"n{k}"} for k in range(4)]
    items = write_items(tmp_path / "src", rows)
    _refused_init(tmp_path, items, ["'gold'", "'note'"])
    _refused_init(tmp_path, items, ["'note'"], "--extra-columns", "gold")  # only what is named is kept
    _refused_init(tmp_path, items, ["--extra-columns", "'glod'", "did you mean 'gold'"], "--extra-columns", "glod,note")
    _refused_init(tmp_path, items, ["'label'", "reads"], "--extra-columns", "gold,note,label")
    w = tmp_path / "ws"
    r = run_cli("init", w, "--items", items, "--extra-columns", "gold,note")
    assert r.returncode == 0, r.stderr
    assert "metadata (kept, not read): gold, note" in r.stdout
    t = pq.read_table(w / "items.parquet")
    assert t.column("gold").to_pylist() == [0, 1, 0, 1] and t.column("note").to_pylist() == ["n0", "n1", "n2", "n3"]
    r = run_cli("init", tmp_path / "ws2", "--items", items, "--all-extra-columns")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "ws2" / "items.parquet").column("note").to_pylist() == ["n0", "n1", "n2", "n3"]


def test_dataset_items_declare_their_metadata(tmp_path):
    """The dataset builders' items files declare their metadata columns, so `init` needs no flag;
    the same columns in a file that does not declare them are refused."""
    from mmal.data.datasets._common import write_items as write_dataset_items

    cols = {"id": ["a", "b", "c"], "label": [0, 1, 0], "split": ["train", "train", "pool"], "text": ["x", "y", "z"],
            "category": ["k", "l", "k"], "source": ["s1", "s2", "s3"]}
    (tmp_path / "ds").mkdir()
    declared = write_dataset_items(pa.table(cols), tmp_path / "ds")
    r = run_cli("init", tmp_path / "ws", "--items", declared)
    assert r.returncode == 0, r.stderr
    assert "metadata (kept, not read): category, source" in r.stdout
    plain = tmp_path / "plain" / "items.parquet"
    plain.parent.mkdir()
    pq.write_table(pa.table(cols), plain)
    _refused_init(tmp_path, plain, ["unknown columns", "'category'", "'source'"])


def test_init_states_what_each_media_column_feeds(tmp_path, media_dir):
    """image and video both present: the image tower reads an item's image, else its video's frames;
    init says so, and the feature code does exactly that."""
    from mmal.features.cache import item_sources

    rows = [{"id": "both", "label": 0, "text": "t", "image": str(media_dir / "a.png"), "video": str(media_dir / "v.mp4")},
            {"id": "vid", "label": 1, "text": "u", "video": str(media_dir / "v.mp4")},
            {"id": "img", "label": 0, "text": "v", "image": str(media_dir / "b.png"), "audio": str(media_dir / "a.wav")}]
    w = tmp_path / "ws"
    r = run_cli("init", w, "--items", write_items(tmp_path / "src", rows))
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("columns: "))
    roles = dict(part.split(" -> ", 1) for part in line[len("columns: "):].split("; "))
    assert roles["text"] == "text tower" and roles["image"] == "image tower" and roles["audio"] == "audio tower"
    assert roles["video"].startswith("image tower (its frames) for items without an image")
    assert "1 item(s) have both and are encoded from the image" in roles["video"]
    src = item_sources(pq.read_table(w / "items.parquet"), "image")
    assert src["both"][0] == "image" and src["vid"][0] == "video" and src["img"][0] == "image"


def test_relevance_roles_name_the_visual_column():
    from mmal.tasks import get_task

    t = pa.table({"id": ["a"], "query": ["q"], "text": ["t"], "image": ["x.png"], "video": ["v.mp4"], "audio": ["a.wav"]})
    roles = dict(get_task("relevance").column_roles(t))
    assert roles["video"] == "visual tokens (frames)" and roles["image"].startswith("not read")
    assert roles["text"] == "keywords" and roles["query"] == "query text" and roles["audio"].startswith("not read")
    roles = dict(get_task("relevance").column_roles(t.drop_columns(["video"])))
    assert roles["image"] == "visual tokens"


# ---- declared classes --------------------------------------------------------------------------
def test_declared_classes_refuse_a_misspelt_one(tmp_path):
    rows = [{"id": "a", "label": "cat", "text": "x"}, {"id": "b", "label": "dgo", "text": "y"},
            {"id": "c", "label": "dog", "text": "z"}]
    items = write_items(tmp_path / "src", rows, "csv")
    _refused_init(tmp_path, items, [str(items), "row 2", "column 'label'", "'dgo'", "did you mean 'dog'"],
                  "--classes", "cat,dog,bird")
    # without --classes the misspelling is a class of its own (what --classes is for)
    r = run_cli("init", tmp_path / "loose", "--items", items)
    assert r.returncode == 0 and "3 classes (cat, dgo, dog)" in r.stdout


def test_declared_classes_fix_the_class_table(tmp_path):
    import tomllib

    rows = [{"id": "a", "label": "dog", "text": "x"}, {"id": "b", "label": "cat", "text": "y"}, {"id": "c", "text": "z"}]
    w = tmp_path / "ws"
    r = run_cli("init", w, "--items", write_items(tmp_path / "src", rows), "--classes", "dog,cat,bird")
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((w / "mmal.toml").read_text())
    # declared order is the class-id order (not sorted), and 'bird' exists with no labeled item yet
    assert cfg["task"]["label_names"] == ["dog", "cat", "bird"] and cfg["task"]["n_classes"] == 3
    assert cfg["task"]["type"] == "multiclass"
    con = sqlite3.connect(w / "state.sqlite")
    assert dict(con.execute("SELECT item_id, label FROM labels").fetchall()) == {"a": 0, "b": 1}
    con.close()
    ints = [{"id": "a", "label": 0, "text": "x"}, {"id": "b", "label": 3, "text": "y"}]
    _refused_init(tmp_path, write_items(tmp_path / "ints", ints), ["row 2", "label 3", "3 declared classes"],
                  "--classes", "dog,cat,bird")
    _refused_init(tmp_path, write_items(tmp_path / "ints2", ints), ["--classes", "'1'", "number"], "--classes", "dog,1")


# ---- values keep their type or are refused -----------------------------------------------------
def test_bytes_text_refused(tmp_path):
    p = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "label": [0, 1], "text": pa.array([b"hello", b"bytes"], pa.binary())}), p)
    _refused_init(tmp_path, p, [str(p), "row 1", "column 'text'", "bytes", "UTF-8 strings"])


def test_float_ids_refused_integer_ids_kept(tmp_path):
    p = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": [0.0, 1.5], "label": [0, 1], "text": ["x", "y"]}), p)
    _refused_init(tmp_path, p, [str(p), "row 1", "column 'id'", "0.0", "strings or integers"])
    p = tmp_path / "i.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 7], pa.int64()), "label": [0, 1], "text": ["x", "y"]}), p)
    r = run_cli("init", tmp_path / "ws", "--items", p)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "ws" / "items.parquet").column("id").to_pylist() == ["10", "7"]


@pytest.mark.parametrize("value,words", [(5, ["integer 5"]), ({"t": 1}, ["JSON object"]), ([1, 2], ["JSON list"])])
def test_jsonl_text_of_another_type_refused(tmp_path, value, words):
    rows = [{"id": "a", "label": 0, "text": "fine"}, {"id": "b", "label": 1, "text": value}]
    _refused_init(tmp_path, write_items(tmp_path / "src", rows), ["row 2", "column 'text'", "must be a string", *words])


def test_label_of_an_object_refused(tmp_path):
    rows = [{"id": "a", "label": 0, "text": "x"}, {"id": "b", "label": {"name": "cat"}, "text": "y"}]
    _refused_init(tmp_path, write_items(tmp_path / "src", rows), ["row 2", "column 'label'", "JSON object"])


# ---- error quality -----------------------------------------------------------------------------
def test_non_utf8_csv_names_row_and_column(tmp_path):
    p = tmp_path / "items.csv"
    # data rows: a; b (a quoted cell over two lines); c with a Latin-1 byte in its text
    p.write_bytes(b'id,label,text\na,0,hello\nb,1,"two\nlines"\nc,0,caf\xe9\n')
    _refused_init(tmp_path, p, [str(p), "row 3", "column 'text'", "not UTF-8", "0xe9", "line 5"])
    p = tmp_path / "items.jsonl"
    p.write_bytes(b'{"id": "a", "label": 0, "text": "x"}\n{"id": "b", "label": 1, "text": "caf\xe9"}\n')
    _refused_init(tmp_path, p, [str(p), "row 2", "not UTF-8", "0xe9"])


def test_label_file_reports_every_bad_row(ws, tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("id,label\ni4,cat\nnope,dog\ni5,bird\ni4,dog\n")
    line = assert_one_line_refusal(ws, ["label", ws, f, "--allow-unbatched"],
                                   [str(f), "3 bad rows", "nothing imported", "row 2: field 'id': unknown item id 'nope'",
                                    "row 3: field 'label': 'bird'", "row 4: field 'label': item 'i4' already has"])
    assert line.index("row 2:") < line.index("row 3:") < line.index("row 4:")
    many = tmp_path / "many.csv"
    many.write_text("id,label\n" + "".join(f"x{k},cat\n" for k in range(25)))
    line = assert_one_line_refusal(ws, ["label", ws, many, "--allow-unbatched"], ["25 bad rows", "and 5 more"])
    assert "row 20: field 'id': unknown item id 'x19'" in line and "'x20'" not in line


def test_label_file_one_bad_row_keeps_its_form(ws, tmp_path):
    f = tmp_path / "one.csv"
    f.write_text("id,label\ni4,cat\nnope,dog\n")
    line = assert_one_line_refusal(ws, ["label", ws, f, "--allow-unbatched"], [])
    assert line == f"mmal: error: {f}: row 2: field 'id': unknown item id 'nope'; nothing imported"


@pytest.mark.parametrize("row,words", [
    ({"id": "i4", "label": "cat", "annotator": {"name": "bob"}}, ["row 1", "'annotator'", "JSON object", "bob"]),
    ({"id": "i4", "label": "cat", "annotator": ["bob"]}, ["row 1", "'annotator'", "JSON list"]),
    ({"id": "i4", "label": "cat", "annotator": 1.5}, ["row 1", "'annotator'", "float"]),
    ({"id": 4.0, "label": "cat"}, ["row 1", "'id'", "float", "4.0"]),
])
def test_label_import_values_of_another_type_refused(ws, tmp_path, row, words):
    f = tmp_path / "labels.jsonl"
    f.write_text(json.dumps(row) + "\n")
    assert_one_line_refusal(ws, ["label", ws, f, "--allow-unbatched"], [str(f), *words])


def test_labelstudio_user_object_annotator(ws, tmp_path):
    """Label Studio's completed_by may be the user object: its email is stored, not the object's text."""
    f = tmp_path / "export.json"
    res = [{"type": "choices", "value": {"choices": ["dog"]}}]
    f.write_text(json.dumps([{"data": {"item_id": "i4"}, "annotations": [{"completed_by": {"id": 3, "email": "a@b.c"}, "result": res}]},
                             {"data": {"item_id": "i5"}, "annotations": [{"completed_by": 9, "result": res}]}]))
    r = run_cli("label", ws, f, "--allow-unbatched")
    assert r.returncode == 0, r.stderr
    con = sqlite3.connect(ws / "state.sqlite")
    assert dict(con.execute("SELECT item_id, annotator FROM labels WHERE item_id IN ('i4', 'i5')").fetchall()) == {
        "i4": "a@b.c", "i5": "9"}
    con.close()
    g = tmp_path / "bad.json"
    g.write_text(json.dumps([{"data": {"item_id": "i4"}, "annotations": [{"completed_by": [3], "result": res}]}]))
    assert_one_line_refusal(ws, ["label", ws, g], ["row 1", "completed_by", "JSON list"])


# ---- label history -----------------------------------------------------------------------------
def _history(w):
    con = sqlite3.connect(w / "state.sqlite")
    try:
        return con.execute("SELECT item_id, round, old_label, new_label, source FROM label_history ORDER BY seq").fetchall()
    finally:
        con.close()


def test_overwriting_a_train_label_warns_and_keeps_history(ws, tmp_path):
    f = tmp_path / "fix.csv"
    f.write_text("id,label\ni0,dog\ni4,cat\n")  # i0 was 'cat' (0) in the items file; i4 is a pool item
    r = run_cli("label", ws, f, "--allow-unbatched")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("mmal: warning:")]
    assert len(warn) == 1 and "'i0' 'cat' -> 'dog'" in warn[0] and "--history" in warn[0] and "i4" not in warn[0]
    out = json.loads(r.stdout)
    assert out["updated"] == 1 and out["inserted"] == 1 and any("'i0' 'cat' -> 'dog'" in w for w in out["warnings"])
    hist = [h for h in _history(ws) if h[0] == "i0"]
    assert hist == [("i0", 0, None, 0, "items-file"), ("i0", 0, 0, 1, str(f.resolve()))]
    r = run_cli("info", ws, "--history", "i0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "label 1 (dog)" in lines[0]
    assert "- -> 0 (cat)" in lines[1] and "items-file" in lines[1]
    assert "0 (cat) -> 1 (dog)" in lines[2] and str(f.resolve()) in lines[2]
    r = run_cli("info", ws, "--history", "i0", "--json")
    data = json.loads(r.stdout)
    assert data["label"] == 1 and [(h["old"], h["new"]) for h in data["history"]] == [(None, 0), (0, 1)]
    r = run_cli("info", ws, "--history", "i9")
    assert r.returncode == 2 and "no item 'i9'" in r.stderr
    # importing the same file again changes nothing: no new history row, no warning
    n = len(_history(ws))
    r = run_cli("label", ws, f, "--allow-unbatched")
    assert r.returncode == 0 and "warning" not in r.stderr and len(_history(ws)) == n


def test_review_page_writes_and_undo_keep_history(ws):
    """The review page stores through put_labels / undo_label: both leave history rows."""
    from mmal.workspace import Workspace
    from mmal.workspace import state

    w = Workspace(ws)
    res = state.put_labels(w, [("i4", 0, 1)], source="serve", annotator="ann")
    assert res["replaced"] == []
    res = state.put_labels(w, [("i1", 0, 0)], source="serve", annotator="ann")  # i1 was 'dog' (1) in the items file
    assert res["replaced"] == [{"id": "i1", "round": 0, "old": 1, "old_round": 0, "old_source": "items-file", "new": 0}]
    assert state.undo_label(w, "i1", 0, label=0, source="serve", previous=res["previous"][0])
    rows = [(h["round"], h["old"], h["new"], h["source"], h["annotator"]) for h in state.label_history(w, "i1")]
    assert rows == [(0, None, 1, "items-file", None), (0, 1, 0, "serve", "ann"), (0, 0, 1, "serve (undo)", None)]
    assert w.current_labels()["i1"] == 1
    assert [(h["old"], h["new"]) for h in state.label_history(w, "i4")] == [(None, 1)]


def test_workspace_without_history_table_loses_nothing(ws, tmp_path):
    """A workspace made before label_history: reading shows its stored labels; a failed import
    creates nothing; the first import adds the table, filled with every label already stored."""
    con = sqlite3.connect(ws / "state.sqlite")
    con.execute("DROP TABLE label_history")
    con.commit()
    labels_before = sorted(con.execute("SELECT * FROM labels").fetchall())
    con.close()
    r = run_cli("info", ws, "--history", "i1")
    assert r.returncode == 0 and "- -> 1 (dog)" in r.stdout and "items-file" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\nnope,cat\n")
    assert_one_line_refusal(ws, ["label", ws, bad, "--allow-unbatched"], ["nope"])
    f = tmp_path / "new.csv"
    f.write_text("id,label\ni5,dog\n")
    assert run_cli("label", ws, f, "--allow-unbatched").returncode == 0
    con = sqlite3.connect(ws / "state.sqlite")
    labels_after = sorted(con.execute("SELECT * FROM labels").fetchall())
    con.close()
    assert [r for r in labels_after if r[0] != "i5"] == labels_before
    hist = _history(ws)
    assert sorted(h for h in hist if h[0] != "i5") == sorted((r[0], r[1], None, r[2], r[3]) for r in labels_before)
    assert [h for h in hist if h[0] == "i5"] == [("i5", 0, None, 1, str(f.resolve()))]


def test_new_workspace_has_history_of_items_file_labels(ws):
    assert sorted(_history(ws)) == [("i0", 0, None, 0, "items-file"), ("i1", 0, None, 1, "items-file"),
                                    ("i2", 0, None, 0, "items-file"), ("i3", 0, None, 1, "items-file")]
