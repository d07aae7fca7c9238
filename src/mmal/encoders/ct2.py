"""Reader for CTranslate2's ``model.bin`` and a mapping of its Whisper encoder into PyTorch.

The CTranslate2 binary (format version 6, little-endian) is laid out as::

    u32   binary version
    str   spec name              (e.g. "WhisperSpec")
    u32   spec revision
    u32   number of variables V
    V x { str name; u8 rank; u32 dims[rank]; u8 dtype; u32 nbytes; bytes data[nbytes] }
    u32   number of aliases A
    A x { str alias; str target }

where ``str`` is ``u16 length (including the trailing NUL)`` + UTF-8 bytes + NUL and
``dtype`` indexes (float32, int8, int16, int32, float16, bfloat16). Quantised weights
(int8 / int16) come with a sibling ``<name>_scale`` variable (per output row for int8,
a scalar for int16); the float weight is ``value / scale``.

A model may be shipped split into several files (``model.bin.part1``, ``model.bin.part2``,
...); :func:`read_ct2` reads the parts as one stream, without joining them on disk.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.errors import EncoderError

#: CTranslate2 ``DataType`` enum order (include/ctranslate2/types.h). bfloat16 is read
#: as raw uint16 and widened to float32 by :func:`_bf16_to_f32`.
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NP_DTYPES = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}
SUPPORTED_BINARY_VERSIONS = (5, 6)


class _PartsReader:
    """Sequential reader over the concatenation of one or more files."""

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths]
        self.sizes = [p.stat().st_size for p in self.paths]
        self._i = 0
        self._f = open(self.paths[0], "rb")
        self.pos = 0  # absolute position in the concatenated stream

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            b = self._f.read(n)
            if b:
                chunks.append(b)
                n -= len(b)
                self.pos += len(b)
                continue
            if self._i + 1 >= len(self.paths):
                break
            self._f.close()
            self._i += 1
            self._f = open(self.paths[self._i], "rb")
        return b"".join(chunks)

    def skip(self, n: int) -> None:
        # seek within the current file, spilling over into the next ones
        while n > 0:
            left = self.sizes[self._i] - self._f.tell()
            step = min(n, left)
            self._f.seek(step, 1)
            n -= step
            self.pos += step
            if n > 0:
                if self._i + 1 >= len(self.paths):
                    raise EOFError
                self._f.close()
                self._i += 1
                self._f = open(self.paths[self._i], "rb")

    def close(self):
        self._f.close()


@dataclass
class CT2Variable:
    """One variable's header (and, once loaded, its data)."""

    name: str
    shape: tuple
    dtype: str
    nbytes: int
    offset: int
    data: np.ndarray | None = None


@dataclass
class CT2Model:
    """Parsed ``model.bin``: spec name, revision, variables by name, aliases."""

    version: int
    spec: str
    revision: int
    variables: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """Variable ``name`` as float32 (dequantised when a ``<name>_scale`` exists).

        int8 weights: ``w = q / scale[:, None]`` (per output row; conv kernels are
        flattened to 2-D first). int16 weights: ``w = q / scale`` (scalar).
        """
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise EncoderError(f"CTranslate2 model ({self.spec}) has no variable '{name}'")
        v = self.variables[name]
        if v.data is None:
            raise EncoderError(f"variable '{name}' was not loaded (filtered out when reading)")
        x = v.data
        if v.dtype == "bfloat16":
            x = _bf16_to_f32(x)
        scale_name = name + "_scale"
        if v.dtype in ("int8", "int16") and scale_name in self.variables and self.variables[scale_name].data is not None:
            s = self.get(scale_name).astype(np.float32)
            xf = x.astype(np.float32)
            if s.ndim == 0 or s.size == 1:
                return xf / float(s.reshape(-1)[0])
            flat = xf.reshape(xf.shape[0], -1)  # [out, in*k]
            return (flat / s.reshape(-1, 1)).reshape(xf.shape)
        return x.astype(np.float32) if x.dtype.kind == "f" else x

    def scalar(self, name: str):
        """A 0-d variable as a Python number."""
        return self.get(name).reshape(-1)[0].item()


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _read_exact(r: _PartsReader, n: int, what: str) -> bytes:
    b = r.read(n)
    if len(b) != n:
        raise EncoderError(
            f"{r.paths[0]}: truncated CTranslate2 model while reading {what} "
            f"(wanted {n} bytes at offset {r.pos - len(b)}, got {len(b)})"
        )
    return b


def _u(r, fmt, what):
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, _read_exact(r, size, what))


def _str(r, what) -> str:
    (n,) = _u(r, "H", what)
    b = _read_exact(r, n, what)
    return b[:-1].decode("utf-8") if b.endswith(b"\0") else b.decode("utf-8")


def read_ct2(paths, *, keep=None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (one path, or a list of parts read in order).

    Parameters
    ----------
    paths : path or list of paths
        ``model.bin`` or its parts ``model.bin.part1``, ``model.bin.part2``, ...
    keep : callable(name) -> bool, optional
        Only the data of variables for which this returns True is read into memory (the
        others are skipped; their headers are still listed). Default: read everything.

    Returns
    -------
    CT2Model
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise EncoderError(f"CTranslate2 model file not found: {p}")
    r = _PartsReader(paths)
    try:
        (version,) = _u(r, "I", "binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise EncoderError(
                f"{paths[0]}: CTranslate2 binary version {version} is not supported "
                f"(expected one of {SUPPORTED_BINARY_VERSIONS})"
            )
        spec = _str(r, "spec name")
        (revision,) = _u(r, "I", "spec revision")
        (n_vars,) = _u(r, "I", "variable count")
        model = CT2Model(version=version, spec=spec, revision=revision)
        for _ in range(n_vars):
            name = _str(r, "variable name")
            (rank,) = _u(r, "B", f"rank of {name}")
            shape = _u(r, "I" * rank, f"shape of {name}") if rank else ()
            (dtype_id,) = _u(r, "B", f"dtype of {name}")
            if dtype_id >= len(CT2_DTYPES):
                raise EncoderError(f"{paths[0]}: variable '{name}' has unknown dtype id {dtype_id}")
            dtype = CT2_DTYPES[dtype_id]
            (nbytes,) = _u(r, "I", f"size of {name}")
            npdt = _NP_DTYPES[dtype]
            count = int(np.prod(shape)) if rank else 1
            if count * npdt.itemsize != nbytes:
                raise EncoderError(
                    f"{paths[0]}: variable '{name}' shape {shape} {dtype} needs "
                    f"{count * npdt.itemsize} bytes but the file says {nbytes}"
                )
            var = CT2Variable(name, tuple(shape), dtype, nbytes, r.pos)
            if keep is None or keep(name):
                buf = _read_exact(r, nbytes, f"data of {name}")
                var.data = np.frombuffer(buf, dtype=npdt).reshape(shape).copy()
            else:
                try:
                    r.skip(nbytes)
                except EOFError:
                    raise EncoderError(f"{paths[0]}: truncated CTranslate2 model inside '{name}'") from None
            model.variables[name] = var
        # aliases are optional in very old files; absent = end of stream
        tail = r.read(4)
        if len(tail) == 4:
            (n_alias,) = struct.unpack("<I", tail)
            for _ in range(n_alias):
                alias = _str(r, "alias")
                model.aliases[alias] = _str(r, "alias target")
        return model
    finally:
        r.close()


# --------------------------------------------------------------------------------------
# Whisper encoder: CTranslate2 variables -> transformers.WhisperEncoder
# --------------------------------------------------------------------------------------


def _is_encoder_var(name: str) -> bool:
    return name.startswith("encoder/")


def whisper_config_from_ct2(model: CT2Model):
    """Build a ``transformers.WhisperConfig`` from the encoder variables' shapes.

    d_model = conv1 out channels, num_mel_bins = conv1 in channels, layers = number of
    ``encoder/layer_i`` scopes, heads = ``encoder/num_heads``, ffn = fc1 rows,
    max_source_positions = rows of the positional table.
    """
    from transformers import WhisperConfig

    v = model.variables
    conv1 = v["encoder/conv1/weight"].shape  # [d, n_mels, 3]
    layer_ids = [int(m.group(1)) for n in v if (m := re.match(r"encoder/layer_(\d+)/", n))]
    if not layer_ids:
        raise EncoderError("CTranslate2 Whisper model has no encoder/layer_<i> variables")
    n_layers = 1 + max(layer_ids)
    heads = int(model.scalar("encoder/num_heads"))
    ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    n_pos = v["encoder/position_encodings/encodings"].shape[0]
    return WhisperConfig(
        d_model=conv1[0],
        num_mel_bins=conv1[1],
        encoder_layers=n_layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        max_source_positions=n_pos,
        decoder_layers=1,
        decoder_attention_heads=heads,
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
    )


def whisper_encoder_from_ct2(model: CT2Model, attn_implementation: str = "sdpa"):
    """Map CTranslate2 Whisper encoder weights into a ``transformers.WhisperEncoder``.

    The fused self-attention projection ``linear_0`` ([3d, d]) splits into q, k, v in
    that order; Whisper's key projection has no bias, so the key third of the fused bias
    must be zero (checked). Returns the module in eval mode, float32, trainable.
    """
    import torch
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = whisper_config_from_ct2(model)
    cfg._attn_implementation = attn_implementation
    with torch.device("meta"):  # skip random init; every tensor is assigned below
        enc = WhisperEncoder(cfg)
    d = cfg.d_model
    g = model.get
    sd = {
        "conv1.weight": g("encoder/conv1/weight"),
        "conv1.bias": g("encoder/conv1/bias"),
        "conv2.weight": g("encoder/conv2/weight"),
        "conv2.bias": g("encoder/conv2/bias"),
        "embed_positions.weight": g("encoder/position_encodings/encodings"),
        "layer_norm.weight": g("encoder/layer_norm/gamma"),
        "layer_norm.bias": g("encoder/layer_norm/beta"),
    }
    for i in range(cfg.encoder_layers):
        s = f"encoder/layer_{i}"
        w_qkv = g(f"{s}/self_attention/linear_0/weight")  # [3d, d]
        b_qkv = g(f"{s}/self_attention/linear_0/bias")  # [3d]
        if w_qkv.shape != (3 * d, d):
            raise EncoderError(f"{s}: fused qkv weight has shape {w_qkv.shape}, expected {(3 * d, d)}")
        if np.abs(b_qkv[d : 2 * d]).max() > 1e-6:
            raise EncoderError(f"{s}: key bias is not zero; cannot map to Whisper (k_proj has no bias)")
        p = f"layers.{i}"
        sd.update(
            {
                f"{p}.self_attn.q_proj.weight": w_qkv[:d],
                f"{p}.self_attn.q_proj.bias": b_qkv[:d],
                f"{p}.self_attn.k_proj.weight": w_qkv[d : 2 * d],
                f"{p}.self_attn.v_proj.weight": w_qkv[2 * d :],
                f"{p}.self_attn.v_proj.bias": b_qkv[2 * d :],
                f"{p}.self_attn.out_proj.weight": g(f"{s}/self_attention/linear_1/weight"),
                f"{p}.self_attn.out_proj.bias": g(f"{s}/self_attention/linear_1/bias"),
                f"{p}.self_attn_layer_norm.weight": g(f"{s}/self_attention/layer_norm/gamma"),
                f"{p}.self_attn_layer_norm.bias": g(f"{s}/self_attention/layer_norm/beta"),
                f"{p}.fc1.weight": g(f"{s}/ffn/linear_0/weight"),
                f"{p}.fc1.bias": g(f"{s}/ffn/linear_0/bias"),
                f"{p}.fc2.weight": g(f"{s}/ffn/linear_1/weight"),
                f"{p}.fc2.bias": g(f"{s}/ffn/linear_1/bias"),
                f"{p}.final_layer_norm.weight": g(f"{s}/ffn/layer_norm/gamma"),
                f"{p}.final_layer_norm.bias": g(f"{s}/ffn/layer_norm/beta"),
            }
        )
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}
    missing, unexpected = enc.load_state_dict(state, strict=False, assign=True)
    if unexpected or missing:
        raise EncoderError(f"Whisper weight mapping incomplete: missing={missing}, unexpected={unexpected}")
    enc.embed_positions.weight.requires_grad_(False)  # fixed sinusoids, as in Whisper
    enc.eval()
    return enc


def load_whisper_encoder(paths, attn_implementation: str = "sdpa"):
    """Read only the encoder variables of a CTranslate2 Whisper model and build the module."""
    model = read_ct2(paths, keep=_is_encoder_var)
    if model.spec != "WhisperSpec":
        raise EncoderError(f"{paths}: CTranslate2 spec is '{model.spec}', expected 'WhisperSpec'")
    return whisper_encoder_from_ct2(model, attn_implementation=attn_implementation)
