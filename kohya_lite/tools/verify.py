"""Per-tensor check of a LoRA file (sd-scripts `networks/check_lora_weights.py`), plus two flags it lacks:
tensors holding NaN/Inf (a diverged training: the file ruins every image) and modules whose weight change
is exactly zero (`lora_up` or `lora_down` all zeros: never trained, as a fresh network is)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from kohya_lite.network.io import read_lora_file


@dataclass
class TensorStat:
    key: str
    shape: tuple[int, ...]
    mean_abs: float
    min_abs: float
    nonfinite: int  # NaN/Inf values

    def csv(self) -> str:
        """kohya's line: key,shape-joined-by-dashes,mean(|w|),min(|w|)."""
        return f"{self.key},{'-'.join(map(str, self.shape))},{self.mean_abs:.8f},{self.min_abs:.8f}"


@dataclass
class VerifyResult:
    path: Path
    modules: int
    tensors: list[TensorStat]
    nonfinite: list[str] = field(default_factory=list)  # keys with NaN/Inf (alphas included)
    zero_modules: list[str] = field(default_factory=list)  # modules with an all-zero up or down

    @property
    def ok(self) -> bool:
        return not self.nonfinite and not self.zero_modules

    def problems(self) -> list[str]:
        """One sentence per finding (empty when the file is fine)."""
        out = []
        if self.nonfinite:
            out.append(f"{len(self.nonfinite)} tensors hold NaN/Inf values (first: {self.nonfinite[0]}): the training "
                       "diverged and this file will break images; use an earlier epoch or retrain with a lower "
                       "learning rate")
        if self.zero_modules:
            out.append(f"{len(self.zero_modules)} of {self.modules} modules are all zero (not trained; first: "
                       f"{self.zero_modules[0]})")
        return out


def verify_lora(path: str | Path) -> VerifyResult:
    tensors, _ = read_lora_file(path)
    names = sorted(k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight"))
    stats = []
    for key in sorted(k for k in tensors if "lora_up" in k or "lora_down" in k):
        w = tensors[key].float()
        finite = torch.isfinite(w)
        a = w.abs()
        stats.append(TensorStat(key, tuple(w.shape), a.mean().item(), a.min().item(), int((~finite).sum())))
    nonfinite = sorted(k for k, v in tensors.items() if not bool(torch.isfinite(v.float()).all()))
    zero = [n for n in names if not bool(tensors[f"{n}.lora_up.weight"].any())
            or not bool(tensors[f"{n}.lora_down.weight"].any())]
    return VerifyResult(Path(path), len(names), stats, nonfinite, zero)
