"""Where Generate and the epoch grid render, and the base model they keep loaded between clicks: the GPU in half
precision when there is one, else the CPU in fp32; a new path, flags or device reloads it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from kohya_lite.errors import UserError

def inference_placement(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Where Generate and the grid render: 'auto' is the GPU in half precision (bf16 where supported, else fp16)
    when CUDA is present, else the CPU in fp32. An explicit 'cpu' or 'cuda[:N]' is honoured."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"'{device}' is not a device", field="device", fix="use auto, cpu or cuda (cuda:1 for the second GPU)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("a CUDA device was asked for, but this machine has no usable NVIDIA GPU", field="device",
                            fix="use --device cpu (or auto), or install the CUDA build of PyTorch (./setup.sh does)")
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def place_for_inference(model: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """UNet and text encoders in `dtype` on `device`; the VAE too, except SDXL's, which stays fp32 (its fp16
    decode overflows). Sampling decodes in the VAE's own dtype."""
    model.unet.to(device, dtype=dtype)
    for te in model.text_encoders:
        te.to(device, dtype=dtype)
    model.vae.to(device, dtype=torch.float32 if model.family == "sdxl" else dtype)
    return model


class ModelCache:
    """Keeps the last loaded base model (loading a real one takes long); a new path, flags or device reload it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    def get(self, path: str | Path, *, v2: bool = False, v_parameterization: bool = False, sdxl: bool = False,
            device: str = "auto") -> Any:
        from kohya_lite.models.load import load_model

        text = str(path or "").strip()
        p = Path(text).expanduser()
        stamp = p.stat().st_mtime_ns if p.exists() else 0
        dev, dtype = inference_placement(device)
        key = (text, bool(v2), bool(v_parameterization), bool(sdxl), stamp, str(dev), dtype)
        with self._lock:
            if key != self._key:
                self._model, self._key = None, None
                model = load_model(text, v2=v2, v_parameterization=v_parameterization, sdxl=sdxl)
                self._model = place_for_inference(model, dev, dtype)
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._model, self._key = None, None


MODEL_CACHE = ModelCache()
