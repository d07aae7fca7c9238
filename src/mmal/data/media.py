"""Media decoding: images (PIL), video frames (PyAV), audio (PyAV -> 16 kHz mono float32).

Every failure (missing, empty, truncated, corrupt, wrong container) raises
:class:`mmal.errors.MediaError` naming the file. Nothing here knows about models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmal.errors import ConfigError, MediaError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_EXT = {".wav", ".ogg", ".mp3", ".m4a", ".flac", ".opus", ".aac", ".mp4", ".webm", ".mkv", ".mov"}
VIDEO_EXT = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"}
SAMPLE_RATE = 16_000
MAX_FRAMES = 16
#: Images declaring more pixels than this are refused before decoding (decompression-bomb
#: guard: a 48 KB PNG can declare 20000 x 20000). 178 MP (just under PIL's own hard limit)
#: admits real 168 MP clip art.
MAX_IMAGE_PIXELS = 178_000_000
#: Decoded images with a longer side are downscaled (aspect kept) right after decoding;
#: every image encoder resizes far below this anyway.
MAX_IMAGE_SIDE = 4096


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(p, "file does not exist")
    if not p.is_file():
        raise MediaError(p, "is not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(p, "file is empty (0 bytes)")
    return p


def load_image(path, *, background=(255, 255, 255)):
    """Decode an image to RGB (alpha composited on ``background``).

    Returns
    -------
    PIL.Image.Image in mode RGB.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    p = _check_file(path)
    try:
        with warnings.catch_warnings():  # the size is bounded below, so PIL's bomb warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _decode_image(p, background)
    except Image.DecompressionBombError as e:  # PIL refuses at open above ~179 MP
        import re

        m = re.search(r"\((\d+) pixels\)", str(e))
        n = f"{int(m.group(1)):,}" if m else "too many"
        raise MediaError(p, f"image declares {n} pixels, more than {MAX_IMAGE_PIXELS:,}: refused as a possible "
                            "decompression bomb; downscale the file first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(p, f"not a decodable image ({type(e).__name__}: {e})") from None


def _decode_image(p: Path, background):
    from PIL import Image

    with Image.open(p) as im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise MediaError(p, f"image declares {w * h:,} pixels ({w} x {h}), more than {MAX_IMAGE_PIXELS:,}: refused as a possible "
                                "decompression bomb; downscale the file first")
        if max(w, h) > MAX_IMAGE_SIDE:
            im.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode at a reduced scale
        im.load()
        if max(im.size) > MAX_IMAGE_SIDE:
            im.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, background + (255,))
            return Image.alpha_composite(bg, im).convert("RGB")
        return im.convert("RGB")


def _open_container(p: Path):
    import av

    try:
        return av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise MediaError(p, f"not a decodable media container ({type(e).__name__}: {e})") from None


def load_video_frames(path, n_frames: int = 3):
    """Sample ``n_frames`` frames uniformly over a video's duration.

    Frames are taken at the centres of ``n_frames`` equal segments of the decoded frame
    sequence (all frames are decoded once; short clips are what we handle).

    Returns
    -------
    list of PIL.Image (RGB), length ``n_frames`` (frames repeat when the video has fewer).
    """
    if not 1 <= int(n_frames) <= MAX_FRAMES:
        raise ConfigError(f"n_frames must be in 1..{MAX_FRAMES}, got {n_frames}")
    import av

    p = _check_file(path)
    container = _open_container(p)
    try:
        if not container.streams.video:
            raise MediaError(p, "has no video stream")
        stream = container.streams.video[0]
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_image())
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if not frames:
                raise MediaError(p, f"video stream not decodable ({type(e).__name__}: {e})") from None
        if not frames:
            raise MediaError(p, "video stream has no decodable frames")
        n = len(frames)
        picks = [min(n - 1, int((j + 0.5) * n / n_frames)) for j in range(n_frames)]
        return [frames[i].convert("RGB") for i in picks]
    finally:
        container.close()


def load_audio(path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio (wav/ogg/mp3/m4a, or the audio track of a video) to mono float32 at ``sr`` Hz.

    Returns
    -------
    np.ndarray [S] float32 in [-1, 1].
    """
    import av

    p = _check_file(path)
    container = _open_container(p)
    try:
        if not container.streams.audio:
            raise MediaError(p, "has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise MediaError(p, f"audio stream not decodable / truncated ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wav.size == 0:
        raise MediaError(p, "audio has zero samples")
    if not np.isfinite(wav).all():
        raise MediaError(p, "audio decodes to non-finite samples")
    return wav


def probe(path, kind: str) -> None:
    """Check that ``path`` decodes as ``kind`` ('image' | 'audio' | 'video'); raise MediaError if not.

    Images and audio are decoded fully (they are small); for video one frame is decoded.
    """
    if kind == "image":
        load_image(path)
    elif kind == "audio":
        _probe_audio(path)
    elif kind == "video":
        _probe_video(path)
    else:
        raise ConfigError(f"unknown media kind '{kind}'")


def _probe_audio(path) -> None:
    p = _check_file(path)
    if p.suffix.lower() == ".wav":
        _check_wav_header(p)
    load_audio(p)


def _check_wav_header(p: Path) -> None:
    """Catch truncated RIFF/WAVE files: the data chunk must hold the bytes it declares."""
    import struct

    data = p.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(p, "not a RIFF/WAVE file")
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"data":
            have = len(data) - pos - 8
            if size != 0xFFFFFFFF and have < size:
                raise MediaError(p, f"truncated WAV: data chunk declares {size} bytes, file holds {have}")
            if size == 0:
                raise MediaError(p, "audio has zero samples")
            return
        pos += 8 + size + (size & 1)
    raise MediaError(p, "WAV has no data chunk (truncated)")


def _probe_video(path) -> None:
    import av

    p = _check_file(path)
    container = _open_container(p)
    try:
        if not container.streams.video:
            raise MediaError(p, "has no video stream")
        try:
            for _ in container.decode(container.streams.video[0]):
                return
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise MediaError(p, f"video stream not decodable ({type(e).__name__}: {e})") from None
        raise MediaError(p, "video stream has no decodable frames")
    finally:
        container.close()
