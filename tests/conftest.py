import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MMAL_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _png(path, color=(200, 30, 30), size=(48, 40)):
    from PIL import Image

    Image.new("RGB", size, color).save(path)


def _wav(path, seconds=0.6, freq=440.0, sr=16000):
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _mp4(path):
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=300", "-t", "1", "-shortest", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """Small valid media files: two PNGs, two WAVs, one MP4."""
    d = tmp_path_factory.mktemp("media")
    _png(d / "a.png", (220, 20, 20))
    _png(d / "b.png", (20, 20, 220))
    _wav(d / "a.wav", freq=330)
    _wav(d / "b.wav", freq=660)
    _mp4(d / "v.mp4")
    return d


def write_items(folder: Path, rows: list[dict], fmt: str = "jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"items.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        import csv

        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_cli(*args, cwd=None, timeout=600):
    """Run the real CLI in a subprocess; returns CompletedProcess (text)."""
    env = dict(os.environ, MMAL_PROGRESS="0", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "mmal.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def tree_snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file below ``folder`` (missing -> {})."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}
