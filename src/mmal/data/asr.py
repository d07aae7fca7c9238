"""Offline English speech recognition with ``pocketsphinx`` (its wheel ships an English model).

Used as an optional ``asr`` text field of relevance items. CMU PocketSphinx is a
2010s HMM recogniser: it gets isolated clear words right some of the time and mangles the
rest (see ``docs/relevance.md`` for what it got right on the English clips here).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import MediaError, MissingPackageError

SAMPLE_RATE = 16000


def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise MissingPackageError("pocketsphinx", "the ASR text field (asr=True)") from None
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def transcribe_waveform(decoder, wav: np.ndarray) -> str:
    """One utterance (float mono at 16 kHz, [-1, 1]) -> lower-case hypothesis ('' if none)."""
    pcm = (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return (hyp.hypstr if hyp is not None else "").strip().lower()


def transcribe(paths, progress=None) -> list[str | None]:
    """Transcribe audio files (any container ffmpeg/PyAV decodes); None for a None path.

    A file that cannot be decoded raises :class:`~mmal.errors.MediaError`.
    """
    from mmal.data.media import load_audio

    dec = _decoder()
    out: list[str | None] = []
    for p in paths:
        if p is None:
            out.append(None)
        else:
            try:
                wav = load_audio(p, sr=SAMPLE_RATE)
            except MediaError:
                raise
            out.append(transcribe_waveform(dec, wav))
        if progress is not None:
            progress()
    return out
