"""The ``synthetic-video`` dataset: short mp4 clips whose class is carried by ONE modality.

Every item is a real mp4 (H.264/AAC when the installed ffmpeg has libx264, else
MPEG-4 part 2/AAC) with ``n_frames`` PIL-drawn frames, a speech track (espeak-ng
speaking one word, mixed with random sine tones) and a title.

Label rule (``n_classes`` = C, class c in 0..C-1; each item has exactly one
*informative* modality, drawn balanced over items):

======================  ==============================  ===============================
modality                informative (carries class c)   uninformative (every other item)
======================  ==============================  ===============================
``video`` (frames)      a moving ``SHAPES[c]`` on top   only random scribble lines (no
                        of random scribble lines        shape)
``audio`` (speech)      espeak-ng says ``WORDS[c]``     espeak-ng says a word from
                                                        ``NEUTRAL_WORDS``
``text`` (title)        a title template naming         a title template naming a
                        ``WORDS[c]``                    ``NEUTRAL_WORDS`` word
======================  ==============================  ===============================

Colours, positions, motion, voice speed/pitch, speech onset and the background tones are
random nuisance for every item. So an item whose informative modality is ``audio`` can
only be decided from the audio track (``audio_sensitive = True``), and likewise for
frames and titles.
"""

from __future__ import annotations

import functools
import io
import math
import pathlib
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import soundfile as sf
from PIL import Image, ImageDraw

from mmal.data.datasets._common import (
    MEDIA_DIR,
    check_fractions,
    progress_bar,
    stratified_split,
    write_items,
)
from mmal.errors import ConfigError, MediaError, MmalError

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
WORDS = ("apple", "boat", "candle", "drum", "lemon", "rabbit")
NEUTRAL_WORDS = ("hello", "okay", "maybe", "today", "welcome", "thanks")
TITLE_TEMPLATES = ("a short clip about {w}", "my {w} video", "watch this: {w}", "{w}, filmed at home")
MODALITIES = ("video", "audio", "text")


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise MmalError(f"synthetic-video needs `{tool}`; run `apt-get install {package}`")


@functools.lru_cache(maxsize=1)
def _video_codec() -> str:
    """Return ``libx264`` when the installed ffmpeg has it, else ``mpeg4``."""
    res = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True)
    return "libx264" if " libx264 " in res.stdout else "mpeg4"


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of 'radius' ``r`` centred at (cx, cy)."""
    if kind == "triangle":
        angles = [-90, 30, 150]
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in angles]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else 0.42 * r
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if kind == "cross":
        w = 0.33 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(kind)


def render_frames(
    shape: str | None, n_frames: int, size: int, rng: np.random.Generator, n_lines: int = 6
) -> np.ndarray:
    """Draw ``n_frames`` RGB frames ``[J, size, size, 3]`` uint8.

    Random background and ``n_lines`` random scribble lines (fixed over the clip); when
    ``shape`` is given, that shape in a random colour moves linearly across the clip.
    """
    bg = tuple(int(v) for v in rng.integers(150, 256, 3))
    lines = [(tuple(rng.uniform(0, size, 4)), tuple(int(v) for v in rng.integers(0, 200, 3)),
              int(rng.integers(1, 3))) for _ in range(n_lines)]
    colour = tuple(int(v) for v in rng.integers(0, 140, 3))
    r = rng.uniform(0.16, 0.26) * size
    start = rng.uniform(r, size - r, 2)
    end = rng.uniform(r, size - r, 2)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for j in range(n_frames):
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        for xy, col, width in lines:
            draw.line(xy, fill=col, width=width)
        if shape is not None:
            t = j / max(n_frames - 1, 1)
            cx, cy = start + t * (end - start)
            if shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
            elif shape == "square":
                draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=colour)
            else:
                draw.polygon(_shape_points(shape, cx, cy, r), fill=colour)
        frames[j] = np.asarray(img)
    return frames


def speak(word: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """espeak-ng says ``word`` with random speed/pitch; returns float32 mono ``[T]``."""
    speed, pitch = int(rng.integers(130, 190)), int(rng.integers(25, 75))
    res = subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True)
    if res.returncode != 0 or not res.stdout:
        raise MmalError(f"espeak-ng failed to speak {word!r}: {res.stderr.decode(errors='replace')[-300:]}")
    wav, sr = sf.read(io.BytesIO(res.stdout), dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if sr != sample_rate:  # linear resampling is plenty for a synthetic benchmark
        t_out = np.arange(int(len(wav) * sample_rate / sr)) / sample_rate
        wav = np.interp(t_out, np.arange(len(wav)) / sr, wav).astype(np.float32)
    return wav


def make_audio(
    word: str, duration: float, sample_rate: int, rng: np.random.Generator,
    n_tones: tuple[int, int] = (1, 3), tone_amplitude: float = 0.15,
) -> np.ndarray:
    """Speech of ``word`` at a random onset + random sine tones; float32 ``[duration*sr]``."""
    total = int(round(duration * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    t = np.arange(total, dtype=np.float32) / sample_rate
    for _ in range(int(rng.integers(n_tones[0], n_tones[1] + 1))):
        freq = rng.uniform(200.0, 1500.0)
        a, b = np.sort(rng.uniform(0, duration, 2))
        env = ((t >= a) & (t < b)).astype(np.float32)
        out += tone_amplitude * env * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    speech = speak(word, rng, sample_rate)[:total]
    onset = int(rng.integers(0, total - len(speech) + 1))
    out[onset : onset + len(speech)] += speech / max(float(np.abs(speech).max()), 1e-6) * 0.8
    return out / max(float(np.abs(out).max()) / 0.9, 1.0)


def mux_mp4(frames: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float, path: pathlib.Path) -> None:
    """Encode ``frames [J,H,W,3]`` + mono ``audio [T]`` into an mp4 with ffmpeg."""
    wav_path = path.with_suffix(".tmp.wav")
    sf.write(wav_path, audio, sample_rate, subtype="PCM_16")
    codec = _video_codec()
    vopts = ["-c:v", codec, "-pix_fmt", "yuv420p"] + (["-preset", "ultrafast"] if codec == "libx264" else ["-q:v", "4"])
    h, w = frames.shape[1:3]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", f"{fps:g}", "-i", "-",
           "-i", str(wav_path), *vopts, "-c:a", "aac", "-b:a", "64k",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
           "-movflags", "+faststart", str(path)]
    try:
        res = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    finally:
        wav_path.unlink(missing_ok=True)
    if res.returncode != 0 or not path.exists() or path.stat().st_size == 0:
        raise MediaError(path, f"ffmpeg could not write the clip: {res.stderr.decode(errors='replace')[-300:]}")


def build_synthetic_video(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    n_classes: int = 4,
    n_frames: int = 8,
    duration: float = 2.0,
    size: int = 128,
    sample_rate: int = 16000,
    train_frac: float = 0.1,
    pool_frac: float = 0.7,
    test_frac: float = 0.2,
    progress: bool = True,
) -> pathlib.Path:
    """Build the synthetic multimodal video dataset; return the path of ``items.parquet``.

    Columns: ``id``, ``label``, ``split``, ``text`` (title), ``video`` and ``audio`` (the
    same mp4 path; audio is decoded from the container), metadata
    ``informative_modality`` (``video`` = the frames, ``audio``, ``text``),
    ``audio_sensitive`` (bool, only audio decides), ``shape`` (drawn shape or null),
    ``spoken_word``. See the module docstring for the label rule.

    Parameters
    ----------
    n :
        Number of clips (default 240). Informative modalities are balanced (n/3 each)
        and classes are balanced within each modality group.
    seed :
        Seeds everything; item ``i`` uses ``default_rng([seed, i])``.
    n_classes :
        Number of classes C (2..6).
    n_frames, duration, size :
        Frames per clip J, clip length in seconds (fps = J / duration), frame side px.
    sample_rate :
        Audio sample rate of the mixed track (Hz).
    train_frac, pool_frac, test_frac :
        Split fractions, stratified by (label, informative modality).
    progress :
        Show a rich progress bar.
    """
    n = 240 if n is None else int(n)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if not 2 <= n_classes <= len(SHAPES):
        raise ConfigError(f"n_classes must be between 2 and {len(SHAPES)}, got {n_classes}")
    if n_frames < 1 or duration <= 0 or size < 16 or size % 2:
        raise ConfigError(f"need n_frames >= 1, duration > 0, even size >= 16; got {n_frames}, {duration}, {size}")
    fractions = check_fractions(train_frac, pool_frac, test_frac)
    _need("ffmpeg", "ffmpeg")
    _need("espeak-ng", "espeak-ng")
    rng = np.random.default_rng(seed)
    modality = rng.permutation(np.resize(np.arange(len(MODALITIES)), n))  # [n] in 0..2
    labels = np.empty(n, dtype=np.int64)
    for m in range(len(MODALITIES)):
        rows = np.flatnonzero(modality == m)
        labels[rows] = rng.permutation(np.resize(np.arange(n_classes), len(rows)))
    splits = stratified_split(labels * len(MODALITIES) + modality, fractions, rng)

    out_dir = pathlib.Path(out_dir)
    media = out_dir / MEDIA_DIR / "synthetic_video"
    media.mkdir(parents=True, exist_ok=True)
    fps = n_frames / duration
    width = len(str(n - 1))
    rows: dict[str, list] = {k: [] for k in ("id", "label", "split", "text", "video", "audio",
                                             "informative_modality", "audio_sensitive", "shape", "spoken_word")}
    with progress_bar("synthetic-video: rendering clips", n, progress) as advance:
        for i in range(n):
            item_rng = np.random.default_rng([seed, i])
            c, mod = int(labels[i]), MODALITIES[modality[i]]
            shape = SHAPES[c] if mod == "video" else None
            word = WORDS[c] if mod == "audio" else str(item_rng.choice(NEUTRAL_WORDS))
            title_word = WORDS[c] if mod == "text" else str(item_rng.choice(NEUTRAL_WORDS))
            title = str(item_rng.choice(TITLE_TEMPLATES)).format(w=title_word)
            frames = render_frames(shape, n_frames, size, item_rng)  # [J, S, S, 3]
            audio = make_audio(word, duration, sample_rate, item_rng)  # [T]
            item_id = f"v{i:0{width}d}"
            path = media / f"{item_id}.mp4"
            mux_mp4(frames, audio, sample_rate, fps, path)
            rel = path.relative_to(out_dir).as_posix()
            rows["id"].append(item_id)
            rows["label"].append(c)
            rows["split"].append(splits[i])
            rows["text"].append(title)
            rows["video"].append(rel)
            rows["audio"].append(rel)
            rows["informative_modality"].append(mod)
            rows["audio_sensitive"].append(mod == "audio")
            rows["shape"].append(shape)
            rows["spoken_word"].append(word)
            advance()
    schema = pa.schema([
        ("id", pa.string()), ("label", pa.int64()), ("split", pa.string()), ("text", pa.string()),
        ("video", pa.string()), ("audio", pa.string()), ("informative_modality", pa.string()),
        ("audio_sensitive", pa.bool_()), ("shape", pa.string()), ("spoken_word", pa.string()),
    ])
    return write_items(pa.table(rows, schema=schema), out_dir)
