"""The :class:`Encoder` base class shared by every pretrained tower.

A subclass implements three small hooks:

- ``_prepare(x, i)``: turn one input (a path or a decoded object) into what the model
  eats (text stays text; an image path becomes a PIL image; an audio path a waveform);
- ``_forward(batch)``: one forward pass over a list of prepared inputs, returning
  ``(pooled [B, dim] float32, [ [T_i, dim] float32 ... ])``; the PyTorch towers implement
  it as ``torch.inference_mode()`` around ``_forward_torch(batch, module=None)``, which
  returns the same as tensors and keeps the autograd graph when the caller allows it
  (end-to-end fine-tuning, :mod:`mmal.train.finetune`, passes a tuned copy as ``module``);
- ``_preprocessing()``: the dict of preprocessing parameters that enters the fingerprint.

The base class does batching, progress, shape/finiteness checks and the fingerprint;
``_prepare`` runs in worker threads (:mod:`mmal.encoders.stream`) while ``_forward`` runs
the batch before, so ``_prepare`` must not touch shared mutable state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mmal.errors import EncoderError

#: Bumped when a change in this package changes the numbers an encoder produces.
ENCODER_CODE_VERSION = 1

_HEADER_BYTES = 1 << 20  # bytes of each weight file hashed into the fingerprint


def file_identity(path) -> dict:
    """Identity of a weight file: name, size and sha256 of its first 1 MiB.

    Content-based (not mtime), so reinstalling the same package keeps the fingerprint and
    a different weight file of the same name changes it.
    """
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(_HEADER_BYTES))
    return {"file": p.name, "size": p.stat().st_size, "head_sha256": h.hexdigest()[:16]}


def make_fingerprint(spec: str, weight_files, preprocessing: dict) -> str:
    """Stable hash of (spec, weight file identities, preprocessing params, code version).

    Returns a 16-hex-digit string prefixed by a filesystem-safe form of the spec, e.g.
    ``text-minilm-3f2a...``, usable as a folder name in the feature cache.
    """
    payload = {
        "spec": spec,
        "weights": [file_identity(p) for p in weight_files],
        "preprocessing": preprocessing,
        "code": ENCODER_CODE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe = spec.replace(":", "-").replace("/", "-").replace(".", "")
    return f"{safe}-{digest}"


class Encoder:
    """A frozen pretrained tower that maps items of one modality to embeddings.

    Attributes
    ----------
    name : str
        The spec it was loaded from (``"text:minilm"``, ...).
    modality : str
        ``"text"``, ``"image"`` or ``"audio"``.
    dim : int
        Width of the pooled and of the per-token vectors.
    fingerprint : str
        Stable id of (spec, weights, preprocessing); the feature cache keys on it.
    module : torch.nn.Module or None
        The underlying network for fine-tuning (None when the tower is not PyTorch).
    """

    name: str = ""
    modality: str = ""
    dim: int = 0
    default_batch_size: int = 16

    def __init__(self):
        self._fingerprint = None

    # ---- hooks --------------------------------------------------------------------
    def _prepare(self, x, i: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError

    def _forward_torch(self, batch, module=None):
        """Differentiable forward pass (tensors); only towers with a PyTorch ``module``."""
        from mmal.errors import ConfigError

        raise ConfigError(
            f"encoder '{self.name}' has no PyTorch module and cannot be fine-tuned end to end; "
            "use text:minilm, image:efficientnet-lite0 or an audio:whisper-* tower, or train on cached features"
        )

    def _preprocessing(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _weight_files(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- public API -----------------------------------------------------------------
    @property
    def module(self):
        return getattr(self, "_module", None)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = make_fingerprint(self.name, self._weight_files(), self._preprocessing())
        return self._fingerprint

    def encode(self, inputs, batch_size: int | None = None, progress: bool = False, workers: int | None = None):
        """Pooled vectors and token/patch/frame sequences from ONE forward pass per batch.

        Parameters
        ----------
        inputs : sequence
            Paths or decoded objects (see the subclass); a single non-list input is
            treated as a list of one.
        batch_size : int, optional
            Items per forward pass (default: the encoder's ``default_batch_size``).
        progress : bool
            Show a ``rich`` progress bar over batches.
        workers : int, optional
            Threads that decode and preprocess the next batches while the forward pass
            runs (:func:`mmal.encoders.stream.prefetch_map`); ``0`` = the plain sequential
            loop; default one per core, at most 4. The numbers do not depend on it.

        Returns
        -------
        pooled : np.ndarray [N, dim] float32
        seqs : list of N np.ndarray [T_i, dim] float32
        """
        from mmal.encoders.stream import default_workers, prefetch_map

        items = self._as_list(inputs)
        bs = self._batch_size(batch_size)
        workers = default_workers() if workers is None else int(workers)
        pooled = np.zeros((len(items), self.dim), np.float32)
        seqs: list = []
        step = self.chunk_size(bs)
        chunks = [list(enumerate(items[s : s + step], start=s)) for s in range(0, len(items), step)]
        bar = None
        if progress and len(items) > bs:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"encode {self.name}", total=len(items))
        stream = prefetch_map(lambda ix: self._prepare(ix[1], ix[0]), chunks, workers=workers)
        try:
            s = 0
            for chunk in stream:
                p, q = self.forward_prepared(chunk, bs)  # [B, dim], list of [T_i, dim]
                pooled[s : s + len(chunk)] = p
                seqs.extend(q)
                s += len(chunk)
                if bar is not None:
                    bar.advance(task, len(chunk))
        finally:
            stream.close()  # cancels the preparation queued ahead on an error
            if bar is not None:
                bar.stop()
        self._check(pooled, seqs)
        return pooled, seqs

    def chunk_size(self, batch_size: int) -> int:
        """Items prepared together before their forward passes (a multiple of ``batch_size``).

        ``batch_size`` here; the real-length Whisper tower takes 4 batches so that
        :meth:`_batches` can put clips of similar length in one forward pass."""
        return int(batch_size)

    def _batches(self, prepared, batch_size: int) -> list:
        """Index lists, one per forward pass, over the prepared inputs: consecutive runs of ``batch_size``."""
        return [list(range(s, min(s + batch_size, len(prepared)))) for s in range(0, len(prepared), batch_size)]

    def forward_prepared(self, prepared: list, batch_size: int | None = None):
        """Forward passes over already prepared inputs (:meth:`_prepare`'s outputs), in batches.

        Batches follow :meth:`_batches`; the outputs come back in the input order.
        Returns ``pooled [N, dim] float32`` and ``N`` sequences ``[T_i, dim] float32``.
        """
        bs = self._batch_size(batch_size)
        pooled = np.zeros((len(prepared), self.dim), np.float32)
        seqs: list = [None] * len(prepared)
        for idx in self._batches(prepared, bs):
            p, q = self._forward([prepared[j] for j in idx])  # [B, dim], list of [T_i, dim]
            for k, j in enumerate(idx):
                pooled[j] = p[k]
                seqs[j] = np.ascontiguousarray(q[k], dtype=np.float32)
        return pooled, seqs

    def _batch_size(self, batch_size) -> int:
        bs = int(batch_size or self.default_batch_size)
        if bs < 1:
            raise EncoderError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        return bs

    def embed(self, inputs, batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Pooled embeddings ``[N, dim]`` float32 (see :meth:`encode`)."""
        return self.encode(inputs, batch_size=batch_size, progress=progress)[0]

    def embed_sequence(self, inputs, batch_size: int | None = None, progress: bool = False) -> list:
        """Per-item sequences ``[T_i, dim]`` float32 (see :meth:`encode`)."""
        return self.encode(inputs, batch_size=batch_size, progress=progress)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, fingerprint={self.fingerprint!r})"

    # ---- helpers ----------------------------------------------------------------------
    @staticmethod
    def _as_list(inputs) -> list:
        if isinstance(inputs, (list, tuple)):
            return list(inputs)
        if isinstance(inputs, np.ndarray) and inputs.ndim == 1 and inputs.dtype.kind == "f":
            return [inputs]  # one waveform
        if isinstance(inputs, (str, Path)) or not hasattr(inputs, "__iter__") or hasattr(inputs, "getpixel"):
            return [inputs]
        return list(inputs)

    def _check(self, pooled, seqs) -> None:
        if not np.isfinite(pooled).all():
            bad = np.where(~np.isfinite(pooled).all(1))[0][:5].tolist()
            raise EncoderError(f"{self.name}: non-finite embeddings for input(s) {bad}")
        for i, t in enumerate(seqs):
            if t.ndim != 2 or t.shape[1] != self.dim:
                raise EncoderError(f"{self.name}: sequence {i} has shape {t.shape}, expected [T, {self.dim}]")
