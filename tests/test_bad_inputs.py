"""Every bad input is one stderr line,
exit 2, no traceback, and a byte-identical workspace (digest of the database tables,
items.parquet, mmal.toml, features/, rounds/, exports/) before and after.

The workspace is tiny and text-only, with synthetic cached features (dimension 8) under
the text encoder's recorded fingerprint, so no encoder model is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import struct
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from conftest import run_cli, write_items

N = 14


def _rows():
    rows = []
    for k in range(N):
        split = "test" if k % 4 == 0 else ("train" if k < 10 else "pool")
        rows.append({"id": f"i{k:02d}", "label": k % 2 if split != "pool" else None, "split": split, "text": f"item {k}"})
    return rows


def _fake_features(ws: Path) -> None:
    """Cache synthetic text features (separable by class) under the recorded text:minilm fingerprint."""
    from mmal.features.cache import FeatureCache, remember_fingerprint

    rows = _rows()
    cache = FeatureCache(ws / "features")
    remember_fingerprint(cache, "text:minilm", {}, "fake0000")
    rng = np.random.default_rng(0)
    ids = [r["id"] for r in rows]
    cls = np.array([int(r["id"][1:]) % 2 for r in rows])
    pooled = rng.normal(size=(N, 8)).astype(np.float32) + 2.0 * cls[:, None]
    seqs = [np.stack([p, p]) for p in pooled]
    half = N // 2
    cache.write_chunk("fake0000", "text", ids[:half], pooled[:half], seqs[:half], np.ones(half, bool))
    cache.write_chunk("fake0000", "text", ids[half:], pooled[half:], seqs[half:], np.ones(N - half, bool))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """init -> synthetic features -> train -> score, once per module."""
    tmp = tmp_path_factory.mktemp("bad")
    items = write_items(tmp / "src", _rows())
    ws = tmp / "ws"
    r = run_cli("init", ws, "--items", items)
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    cfg.setdefault("train", {}).update({"epochs": 5})  # the default learner (late-fusion), few epochs
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    _fake_features(ws)
    for cmd in (("train", ws), ("score", ws)):
        r = run_cli(*cmd)
        assert r.returncode == 0, r.stderr
    return ws


@pytest.fixture
def ws(template, tmp_path):
    dst = tmp_path / "ws"
    shutil.copytree(template, dst)
    return dst


def digest(ws: Path) -> str:
    """sha256 over the database's table contents (raw bytes if it is not a readable database),
    items.parquet, mmal.toml and every file under features/, rounds/, exports/."""
    h = hashlib.sha256()
    db = ws / "state.sqlite"
    if not db.exists():
        h.update(b"db:missing")
    else:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
                for t in tables:
                    h.update(f"table:{t}".encode())
                    for row in sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr):
                        h.update(repr(row).encode())
            finally:
                con.close()
        except sqlite3.DatabaseError:
            h.update(b"db-bytes:" + db.read_bytes())
    for name in ("items.parquet", "mmal.toml"):
        p = ws / name
        h.update(f"{name}:".encode() + (p.read_bytes() if p.exists() else b"<missing>"))
    for sub in ("features", "rounds", "exports"):
        folder = ws / sub
        for p in sorted(folder.rglob("*")) if folder.exists() else []:
            if p.is_file():
                h.update(str(p.relative_to(ws)).encode() + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def assert_one_line_refusal(ws, args, words, *, before=None):
    before = digest(ws) if before is None else before
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert digest(ws) == before
    return lines[0]


# ---- group 1: usage errors -------------------------------------------------------------
USAGE = {
    "budget-not-int": (["select", "{ws}", "--strategy", "entropy", "--budget", "abc"], ["--budget", "mmal select --help"]),
    "misspelt-option": (["select", "{ws}", "--strategy", "entropy", "--budgt", "5"], ["--budgt"]),
    "unknown-command": (["frobnicate"], ["frobnicate"]),
    "missing-argument": (["label", "{ws}"], ["file", "mmal label --help"]),
    "missing-required-option": (["init", "{ws}-new"], ["--items"]),
    "budget-zero": (["select", "{ws}", "--strategy", "entropy", "--budget", "0"], ["--budget", ">= 1"]),
    "batch-size-negative": (["encode", "{ws}", "--batch-size", "-4"], ["--batch-size", ">= 1"]),
    "mc-samples-negative": (["score", "{ws}", "--mc-samples", "-1"], ["--mc-samples"]),
    "bad-fusion-flag": (["train", "{ws}", "--fusion", "magic"], ["--fusion", "'magic'"]),
    "bad-learner-flag": (["train", "{ws}", "--learner", "svm"], ["--learner", "'svm'"]),
    "simulate-semicolon-mix": (["simulate", "x.jsonl", "--strategies", "entropy:0.8;lsb-lt:0.2", "--init", "2", "--budget", "2",
                                "--rounds", "1", "--out", "{ws}-sim"], ["--strategies", "';'", "'|'"]),
    "bad-seeds": (["simulate", "x.jsonl", "--strategies", "entropy", "--init", "2", "--budget", "2", "--rounds", "1",
                   "--out", "{ws}-sim", "--seeds", "0,a"], ["--seeds"]),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_error_one_line(case, ws):
    args, words = USAGE[case]
    assert_one_line_refusal(ws, [a.format(ws=ws) for a in args], words)
    assert not Path(f"{ws}-new").exists() and not Path(f"{ws}-sim").exists()


def test_version_and_help_exit_0():
    from mmal import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mmal {__version__}" and r.stderr == ""
    r = run_cli()
    assert r.returncode == 0 and "select" in r.stdout and "Traceback" not in r.stderr


# ---- errors name the command that fixes them --------------------------------------------
@pytest.mark.parametrize("strategy,fix", [("bald", "--mc-samples"), ("bmmal", "--coalitions")])
def test_select_error_names_the_fixing_flag(ws, strategy, fix):
    line = assert_one_line_refusal(ws, ["select", ws, "--strategy", strategy, "--budget", "2"], [fix, "mmal score"])
    assert "value_fn" not in line and "pool.extras" not in line


def test_mix_shares_not_summing_to_one_are_announced(ws):
    r = run_cli("select", ws, "--strategy", "entropy:3,margin:1", "--budget", "2")
    assert r.returncode == 0, r.stderr
    assert "shares sum to 4" in r.stderr and "entropy 0.75" in r.stderr and "margin 0.25" in r.stderr
    assert json.loads(r.stdout)["n_selected"] == 2


# ---- group 4: items validation -----------------------------------------------------------
def _png_declaring(path: Path, w: int, h: int) -> None:
    """A tiny PNG whose header declares w x h pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _items_cases(tmp: Path):
    bomb = tmp / "bomb.png"
    _png_declaring(bomb, 20000, 20000)
    t = {"split": "train", "text": "x"}
    return {
        "label-1e30-jsonl": ("jsonl", [{"id": "a", "label": 0, **t}, {"id": "b", "label": 1e30, **t}], ["row 2", "'label'", "out of range"]),
        "label-beyond-64-bits-csv": ("csv", [{"id": "a", "label": 0, **t}, {"id": "b", "label": "99999999999999999999999", **t}],
                                     ["row 2", "'label'", "out of range"]),
        "label-2e9": ("jsonl", [{"id": "a", "label": 0, **t}, {"id": "b", "label": 2_000_000_000, **t}], ["row 2", "'label'", "out of range"]),
        "labels-not-contiguous": ("jsonl", [{"id": "a", "label": 0, **t}, {"id": "b", "label": 2, **t}], ["'label'", "contiguous", "label 1"]),
        "labels-mixed-int-and-name": ("jsonl", [{"id": "a", "label": 0, **t}, {"id": "b", "label": "cat", **t}], ["row 2", "'label'", "class name"]),
        "label-name-conflict": ("jsonl", [{"id": "a", "label": 0, "label_name": "cat", **t}, {"id": "b", "label": 0, "label_name": "dog", **t}],
                                ["row 2", "'label_name'", "'cat'"]),
        "id-with-newline": ("jsonl", [{"id": "a", "label": 0, **t}, {"id": "b\nc", "label": 0, **t}], ["row 2", "'id'", "U+000A"]),
        "id-with-nul": ("csv", [{"id": "a", "label": 0, **t}, {"id": "b\x00", "label": 0, **t}], ["row 2", "'id'", "U+0000"]),
        "png-decompression-bomb": ("jsonl", [{"id": "a", "label": 0, **t, "image": str(bomb)}],
                                   ["row 1", "'image'", "bomb.png", "400,000,000 pixels", "decompression bomb"]),
    }


@pytest.mark.parametrize("case", sorted(_items_cases(Path("/tmp")).keys()))
def test_items_validation(case, tmp_path, ws):
    fmt, rows, words = _items_cases(tmp_path)[case]
    items = write_items(tmp_path / "items", rows, fmt)
    line = assert_one_line_refusal(ws, ["init", tmp_path / "new", "--items", items], words)
    assert str(items) in line
    assert not (tmp_path / "new").exists()
    # replacing an existing workspace with them leaves it untouched
    assert_one_line_refusal(ws, ["init", ws, "--items", items, "--force"], words)


def test_class_names_stored_in_workspace(tmp_path):
    import pyarrow.parquet as pq

    rows = [{"id": "a", "label": "zebra", "text": "x"}, {"id": "b", "label": "ant", "text": "y"},
            {"id": "c", "label": "moth", "text": "z"}, {"id": "d", "text": "w"}]
    ws = tmp_path / "ws"
    r = run_cli("init", ws, "--items", write_items(tmp_path / "src", rows))
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    expected = sorted({"zebra", "ant", "moth"})
    assert cfg["task"]["label_names"] == expected and cfg["task"]["n_classes"] == 3
    con = sqlite3.connect(ws / "state.sqlite")
    got = dict(con.execute("SELECT item_id, label FROM labels").fetchall())
    assert got == {"a": expected.index("zebra"), "b": expected.index("ant"), "c": expected.index("moth")}
    assert pq.read_table(ws / "items.parquet").column("label").to_pylist() == [2, 0, 1, None]
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import label_names

    assert label_names(Workspace(ws)) == expected  # exports read the same table
    r = run_cli("info", ws)
    assert r.returncode == 0 and f"classes 3 ({', '.join(f'{i} {n}' for i, n in enumerate(expected))})" in r.stdout


def test_label_name_column_and_declared_class_count(tmp_path):
    rows = [{"id": "a", "label": 1, "label_name": "dog", "text": "x"}, {"id": "b", "label": 0, "label_name": "cat", "text": "y"}]
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", write_items(tmp_path / "src", rows)).returncode == 0
    assert tomllib.loads((ws / "mmal.toml").read_text())["task"]["label_names"] == ["cat", "dog"]
    # integer labels with a gap are fine when the class count is declared
    rows = [{"id": "a", "label": 0, "text": "x"}, {"id": "b", "label": 4, "text": "y"}]
    ws2 = tmp_path / "ws2"
    r = run_cli("init", ws2, "--items", write_items(tmp_path / "src2", rows), "--n-classes", "6")
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((ws2 / "mmal.toml").read_text())["task"]["n_classes"] == 6


def test_no_labels_at_all(tmp_path):
    rows = [{"id": f"u{k}", "text": f"t {k}"} for k in range(4)]
    ws = tmp_path / "ws"
    r = run_cli("init", ws, "--items", write_items(tmp_path / "src", rows))
    assert r.returncode == 0, r.stderr
    assert "0 classes" in r.stdout and "mmal label" in r.stderr
    assert_one_line_refusal(ws, ["train", ws], ["no labeled items", "mmal label"])


def test_large_image_downscaled(tmp_path):
    from PIL import Image

    from mmal.data.media import MAX_IMAGE_SIDE, load_image

    p = tmp_path / "wide.png"
    Image.new("RGB", (MAX_IMAGE_SIDE * 2, 300), (10, 200, 30)).save(p)
    im = load_image(p)
    assert im.size[0] == MAX_IMAGE_SIDE and abs(im.size[1] - 300 * MAX_IMAGE_SIDE / (MAX_IMAGE_SIDE * 2)) <= 1
    assert im.getpixel((5, 5)) == (10, 200, 30)


# ---- group 5: a corrupted workspace ------------------------------------------------------
def _truncate(p: Path, keep: float = 0.5):
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


def _edit_toml(ws: Path, fn):
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    fn(cfg)
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))


def _first(ws: Path, pattern: str) -> Path:
    return sorted(ws.rglob(pattern))[0]


CORRUPT = {
    "db-truncated": (lambda ws: _truncate(ws / "state.sqlite", 0.3), "info", "state.sqlite"),
    "db-zeroed": (lambda ws: (ws / "state.sqlite").write_bytes(b"\0" * (ws / "state.sqlite").stat().st_size), "info", "state.sqlite"),
    "db-garbage": (lambda ws: (ws / "state.sqlite").write_bytes(b"this is not a database\n" * 200), "label", "state.sqlite"),
    "db-empty-file": (lambda ws: (ws / "state.sqlite").write_bytes(b""), "select", "state.sqlite"),
    "db-deleted-label": (lambda ws: (ws / "state.sqlite").unlink(), "label", "state.sqlite"),
    "db-deleted-train": (lambda ws: (ws / "state.sqlite").unlink(), "train", "state.sqlite"),
    "chunk-truncated-info": (lambda ws: _truncate(_first(ws, "chunk-000001.npz")), "info", "chunk-000001.npz"),
    "chunk-truncated-encode": (lambda ws: _truncate(_first(ws, "chunk-000001.npz")), "encode", "chunk-000001.npz"),
    "pooled-npy-truncated": (lambda ws: _truncate(_first(ws / "features", "pooled.npy"), 0.7), "train", "pooled.npy"),
    "probs-npy-truncated-select": (lambda ws: _truncate(ws / "rounds/0/pool/probs.npy", 0.7), "select", "probs.npy"),
    "probs-npy-truncated-evaluate": (lambda ws: _truncate(ws / "rounds/0/pool/probs.npy", 0.7), "evaluate", "probs.npy"),
    "pool-ids-parquet-garbage": (lambda ws: (ws / "rounds/0/pool/ids.parquet").write_bytes(b"x\n"), "select", "ids.parquet"),
    "items-parquet-deleted": (lambda ws: (ws / "items.parquet").unlink(), "info", "items.parquet"),
    "items-parquet-garbage": (lambda ws: (ws / "items.parquet").write_bytes(b"PAR1 not really"), "info", "items.parquet"),
    "toml-n-classes-abc": (lambda ws: _edit_toml(ws, lambda c: c["task"].update(n_classes="abc")), "info", "[task] n_classes"),
    "toml-lr-fast": (lambda ws: _edit_toml(ws, lambda c: c.setdefault("train", {}).update(lr="fast")), "train", "[train] lr"),
    "toml-missing-task": (lambda ws: _edit_toml(ws, lambda c: c.pop("task")), "info", "[task]"),
    "toml-val-fraction-1.5": (lambda ws: _edit_toml(ws, lambda c: c.setdefault("train", {}).update(val_fraction=1.5)), "train", "[train] val_fraction"),
    "toml-unknown-key": (lambda ws: _edit_toml(ws, lambda c: c.setdefault("train", {}).update(learning_rate=0.1)), "train", "[train] unknown key 'learning_rate'"),
    "toml-key-nothing-reads": (lambda ws: _edit_toml(ws, lambda c: c.setdefault("encode", {}).update(device="cuda")), "encode", "[encode] unknown key 'device'"),
    "toml-unknown-section": (lambda ws: _edit_toml(ws, lambda c: c.update(extra={"a": 1})), "info", "[extra]"),
    "toml-bool-as-int": (lambda ws: _edit_toml(ws, lambda c: c.setdefault("train", {}).update(epochs=True)), "train", "[train] epochs"),
    "toml-invalid-syntax": (lambda ws: (ws / "mmal.toml").write_text("[task\ntype = 'classify'\n"), "info", "invalid TOML"),
}
COMMANDS = {
    "info": lambda ws, tmp: ["info", ws],
    "label": lambda ws, tmp: ["label", ws, tmp],
    "train": lambda ws, tmp: ["train", ws],
    "select": lambda ws, tmp: ["select", ws, "--strategy", "entropy", "--budget", "2"],
    "evaluate": lambda ws, tmp: ["evaluate", ws],
    "encode": lambda ws, tmp: ["encode", ws],
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupted_workspace(case, ws, tmp_path):
    damage, command, words = CORRUPT[case]
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\ni10,1\n")
    damage(ws)
    line = assert_one_line_refusal(ws, COMMANDS[command](ws, labels), [words])
    assert str(ws) in line  # names the file
    if case.startswith("db-") or case.startswith("items-"):
        assert "restore" in line and "mmal init" in line
    if case.startswith("db-deleted"):
        assert not (ws / "state.sqlite").exists()  # never re-created empty


# ---- train flags are remembered; the feature cache stores any id safely ----------------
def test_train_flags_remembered(ws):
    import torch

    def checkpoint():
        ck = torch.load(ws / "rounds/0/model.pt", map_location="cpu", weights_only=True)
        return ck["learner"], ck["config"]

    r = run_cli("train", ws, "--heads", "fused+unimodal", "--seed", "3", "--learner", "late-fusion")
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    assert cfg["model"]["heads"] == "fused+unimodal" and cfg["train"]["seed"] == 3 and cfg["model"]["learner"] == "late-fusion"
    assert json.loads(r.stdout.strip().splitlines()[-1])["remembered"] == {"model.heads": "fused+unimodal", "train.seed": 3,
                                                                          "model.learner": "late-fusion"}
    (ws / "rounds/0/model.pt").unlink()
    r = run_cli("train", ws)  # no flags: the remembered ones apply
    assert r.returncode == 0, r.stderr
    name, conf = checkpoint()
    assert name == "late-fusion" and conf["seed"] == 3 and conf["model"]["heads"] == "fused+unimodal"
    # a failed train remembers nothing (here: it fails reading the features, after every flag was accepted)
    before = (ws / "mmal.toml").read_bytes()
    (ws / "features").rename(ws / "features.away")
    r = run_cli("train", ws, "--learner", "linear", "--seed", "5", "--heads", "fused")
    (ws / "features.away").rename(ws / "features")
    assert r.returncode == 2 and "mmal encode" in r.stderr and (ws / "mmal.toml").read_bytes() == before


def test_schema_model_keys_match_the_learners():
    """Every setting a learner accepts is a [model] key of the schema, and nothing else is."""
    import dataclasses
    import inspect

    from mmal.learners import LEARNERS
    from mmal.models import ModelConfig
    from mmal.models.late_fusion import LateFusionConfig
    from mmal.workspace.schema import SCHEMA

    expected = {"learner"}
    expected |= {f.name for f in dataclasses.fields(ModelConfig)} - {"input_dims", "n_classes"}
    expected |= {f.name for f in dataclasses.fields(LateFusionConfig)} - {"input_dims", "n_classes"}
    # late-fusion's own learner-level settings (label_smoothing, init, probe_C), read from [model] by build_learner
    expected |= set(inspect.signature(LEARNERS["late-fusion"].__init__).parameters) - {"self", "n_classes", "seed", "model",
                                                                                       "train", "modalities"}
    expected |= set(inspect.signature(LEARNERS["linear"].__init__).parameters) - {"self", "n_classes", "seed", "modalities"}
    for name in ("probe", "hcmrm", "cosine", "auto-relevance"):  # the relevance learners
        expected |= set(inspect.signature(LEARNERS[name].__init__).parameters) - {"self", "n_classes", "seed", "train"}
    # the cross-validated default's own settings (its model/train go to late-fusion)
    expected |= set(inspect.signature(LEARNERS["auto"].__init__).parameters) - {"self", "n_classes", "seed", "model",
                                                                                "train", "modalities"}
    assert set(SCHEMA["model"]) == expected
    assert set(SCHEMA["model"]["learner"].choices) == set(LEARNERS)


def test_feature_cache_ids_with_any_characters(tmp_path):
    from mmal.features.cache import FeatureCache

    ids = ["a\nb", "c\r\nd", " e ", "f\u2028g", "h"]
    cache = FeatureCache(tmp_path)
    pooled = np.arange(len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)
    cache.write_chunk("fp", "text", ids, pooled, [p[None] for p in pooled], np.ones(len(ids), bool))
    feats = cache.load("fp", "text")
    assert list(feats.ids) == ids
    np.testing.assert_array_equal(np.asarray(feats.pooled), pooled)
    back = cache.load("fp", "text", ids[::-1])
    np.testing.assert_array_equal(np.asarray(back.pooled), pooled[::-1])
