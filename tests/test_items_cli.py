"""Items validation and the CLI's bad-input contract: one clear line, exit 2, workspace unchanged."""

import json
import shutil

import pytest

from conftest import run_cli, tree_snapshot, write_items


def _good_rows(media):
    return [
        {"id": "a", "label": 0, "split": "train", "text": "a red square", "image": str(media / "a.png"), "audio": str(media / "a.wav")},
        {"id": "b", "label": 1, "split": "test", "text": "a blue square", "image": str(media / "b.png"), "audio": str(media / "b.wav")},
        {"id": "c", "label": None, "split": "pool", "text": "no media at all", "image": None, "audio": None},
    ]


@pytest.fixture
def workspace(tmp_path, media_dir):
    items = write_items(tmp_path / "src", _good_rows(media_dir))
    ws = tmp_path / "ws"
    r = run_cli("init", ws, "--items", items)
    assert r.returncode == 0, r.stderr
    return ws


def _bad_cases(tmp_path, media):
    """name -> (rows or raw file writer, expected words in the error)."""
    bad = tmp_path / "badmedia"
    bad.mkdir()
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    data = (media / "a.wav").read_bytes()
    (bad / "trunc.wav").write_bytes(data[: len(data) // 3])
    (bad / "empty.ogg").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n")
    base = {"label": 0, "split": "train", "text": "x"}
    return {
        "duplicate-id": ([{"id": "a", **base}, {"id": "a", **base}], ["row 2", "'id'", "duplicate"]),
        "empty-id": ([{"id": "a", **base}, {"id": "", **base}], ["row 2", "'id'", "empty"]),
        "non-integer-label": ([{"id": "a", **base}, {**base, "id": "b", "label": "cat"}], ["row 2", "'label'", "integer"]),
        "unknown-split": ([{"id": "a", **base}, {**base, "id": "b", "split": "validation"}], ["row 2", "'split'", "validation"]),
        "missing-media": ([{"id": "a", **base, "image": "nope/missing.png"}], ["row 1", "'image'", "not found"]),
        "corrupt-png": ([{"id": "a", **base, "image": str(bad / "corrupt.png")}], ["row 1", "'image'", "corrupt.png"]),
        "truncated-wav": ([{"id": "a", **base, "audio": str(bad / "trunc.wav")}], ["row 1", "'audio'", "trunc.wav"]),
        "zero-length-audio": ([{"id": "a", **base, "audio": str(bad / "empty.ogg")}], ["row 1", "'audio'", "empty.ogg"]),
        "text-as-mp4": ([{"id": "a", **base, "video": str(bad / "text.mp4")}], ["row 1", "'video'", "text.mp4"]),
        "no-modality-column": ([{"id": "a", "label": 0, "split": "train", "title": "x"}], ["no modality column"]),
    }


CASES = ["duplicate-id", "empty-id", "non-integer-label", "unknown-split", "missing-media", "corrupt-png",
         "truncated-wav", "zero-length-audio", "text-as-mp4", "no-modality-column"]


@pytest.mark.parametrize("fmt", ["jsonl"])
@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit2_workspace_unchanged(case, fmt, tmp_path, media_dir, workspace):
    rows, words = _bad_cases(tmp_path, media_dir)[case]
    items = write_items(tmp_path / "bad", rows, fmt)
    before = tree_snapshot(workspace)
    # 1) a new workspace: nothing may be created
    new_ws = tmp_path / "new_ws"
    r = run_cli("init", new_ws, "--items", items)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert str(items) in lines[0] or case == "missing-media" and "items.jsonl" in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not new_ws.exists()
    # 2) replacing an existing workspace with bad items leaves it untouched
    r = run_cli("init", workspace, "--items", items, "--force")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert tree_snapshot(workspace) == before
    assert not [p for p in workspace.parent.iterdir() if p.name.startswith(".ws.")]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_formats_report_rows(fmt, tmp_path, media_dir):
    rows, words = _bad_cases(tmp_path, media_dir)["non-integer-label"]
    if fmt == "parquet":
        rows = [dict(r, label=str(r["label"])) for r in rows]
    items = write_items(tmp_path / "bad", rows, fmt)
    r = run_cli("init", tmp_path / "w", "--items", items)
    assert r.returncode == 2
    assert "row 2" in r.stderr and "'label'" in r.stderr


def test_valid_items_all_formats(tmp_path, media_dir):
    from mmal.data.items import validate_items

    for fmt in ("jsonl", "csv", "parquet"):
        rows = _good_rows(media_dir)
        # relative paths resolve against the items file
        folder = tmp_path / fmt
        folder.mkdir()
        shutil.copy(media_dir / "a.png", folder / "a.png")
        rows[0]["image"] = "a.png"
        t = validate_items(write_items(folder, rows, fmt))
        assert t.column("id").to_pylist() == ["a", "b", "c"]
        assert t.column("label").to_pylist() == [0, 1, None]
        assert t.column("split").to_pylist() == ["train", "test", "pool"]
        assert t.column("image").to_pylist()[0] == str((folder / "a.png").resolve())
        assert t.column("image").to_pylist()[2] is None  # missing modality is masked, not an error


def test_split_defaults_from_label(tmp_path, media_dir):
    from mmal.data.items import validate_items

    t = validate_items(write_items(tmp_path, [{"id": "x", "label": 0, "text": "t"}, {"id": "y", "text": "u"}]))
    assert t.column("split").to_pylist() == ["train", "pool"]


def test_init_existing_workspace_refused(workspace, tmp_path, media_dir):
    items = write_items(tmp_path / "again", _good_rows(media_dir))
    before = tree_snapshot(workspace)
    r = run_cli("init", workspace, "--items", items)
    assert r.returncode == 2 and "already a workspace" in r.stderr
    assert tree_snapshot(workspace) == before


def test_info_on_missing_workspace(tmp_path):
    r = run_cli("info", tmp_path / "nowhere")
    assert r.returncode == 2 and "not a workspace" in r.stderr and "Traceback" not in r.stderr


def test_init_records_state(workspace):
    import sqlite3

    con = sqlite3.connect(workspace / "state.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 3
    rows = con.execute("SELECT item_id, label, source FROM labels ORDER BY item_id").fetchall()
    assert rows == [("a", 0, "items-file"), ("b", 1, "items-file")]


def _strip_label_names(ws):
    """Remove ``[task] label_names`` from mmal.toml (a hand-written or older config); return them."""
    import tomllib

    import tomli_w

    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    names = cfg["task"].pop("label_names")
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    return names


def _info_lines(ws):
    r = run_cli("info", ws)
    assert r.returncode == 0, r.stderr
    return {line[:12].strip(): line[12:] for line in r.stdout.splitlines()}


def test_info_names_the_task_levels_when_mmal_toml_has_none(tmp_path):
    levels = [0, 3, 2, 3, None]
    rows = [{"id": f"v{i}", "label": y, "split": "pool" if y is None else "train", "text": f"clip {i}",
             "query": "a cat" if i % 2 else "a dog"} for i, y in enumerate(levels)]
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", write_items(tmp_path / "src", rows)).returncode == 0
    names = _strip_label_names(ws)  # what init stored: the relevance task's level names
    assert len(names) == 4 and all(n != str(i) for i, n in enumerate(names))
    lines = _info_lines(ws)
    assert lines["task"] == "relevance  classes 4 (" + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + ")"
    counts = [sum(y == k for y in levels) for k in range(4)]  # level 1 has no label: shown as 0
    assert lines["labeled"] == "4  per class " + ", ".join(f"{n}={c}" for n, c in zip(names, counts))
    r = run_cli("info", ws, "--json")
    assert json.loads(r.stdout)["class_names"] == names


def test_info_shows_class_names_and_ids_only_where_there_are_none(tmp_path):
    rows = [{"id": i, "label": y, "split": "train", "text": i} for i, y in
            [("a", "dog"), ("b", "cat"), ("c", "dog"), ("d", "bird")]]
    named = tmp_path / "named"
    assert run_cli("init", named, "--items", write_items(tmp_path / "s1", rows)).returncode == 0
    lines = _info_lines(named)
    order = sorted({"dog", "cat", "bird"})  # init numbers string classes in sorted order
    assert lines["task"] == "multiclass  classes 3 (" + ", ".join(f"{i} {n}" for i, n in enumerate(order)) + ")"
    assert lines["labeled"] == "4  per class bird=1, cat=1, dog=2"
    ints = [{**r, "label": {"dog": 0, "cat": 1, "bird": 2}[r["label"]]} for r in rows]
    bare = tmp_path / "bare"
    assert run_cli("init", bare, "--items", write_items(tmp_path / "s2", ints)).returncode == 0
    lines = _info_lines(bare)
    assert lines["task"] == "multiclass  classes 3"
    assert lines["labeled"] == "4  per class 0=2, 1=1, 2=1"
