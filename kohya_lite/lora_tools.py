"""LoRA post-processing: resize (SVD to a lower or dynamic rank) and merge (several LoRAs into one).

Both keep one alpha for the whole file and fold per-module scales into `lora_up` (lora-file-format §6), so
diffusers, A1111 and ComfyUI scale every module the same way. `ss_*` metadata of the (first) input is kept
and the changed fields are updated; the file hashes are recomputed on save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from kohya_lite.errors import UserError
from kohya_lite.network.io import read_lora_file, save_lora_file
from kohya_lite.network.lora import delta_weight

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")


@dataclass
class ToolResult:
    path: Path
    modules: int
    ranks: dict[int, int]  # rank → number of modules
    alpha: float


def module_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight"))


def module_delta(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """ΔW = (alpha / rank) · up @ down of one module, in float32, shaped like the base weight."""
    down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
    rank = down.shape[0]
    alpha = float(tensors.get(f"{name}.alpha", torch.tensor(float(rank))))
    return delta_weight(down, up, alpha / rank)


def pick_rank(s: torch.Tensor, new_rank: int, method: str | None = None, param: float = 0.0) -> int:
    """How many singular values to keep: `new_rank`, or fewer by a dynamic rule (at least 1)."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 1
    keep = min(new_rank, s.numel())
    if method == "sv_ratio":  # keep values larger than S_max / param
        keep = min(keep, int((s > s[0] / param).sum()))
    elif method == "sv_cumulative":  # keep until the sum of S reaches the fraction param
        cum = torch.cumsum(s, 0) / s.sum()
        keep = min(keep, int((cum < param).sum()) + 1)
    elif method == "sv_fro":  # keep until the retained Frobenius energy reaches param²
        energy = torch.cumsum(s**2, 0) / (s**2).sum()
        keep = min(keep, int((energy < param**2).sum()) + 1)
    return max(1, keep)


def factor(delta: torch.Tensor, rank: int, alpha: float, method: str | None = None,
           param: float = 0.0, max_rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(down, up, kept rank) with (alpha / kept) · up @ down ≈ delta, by a truncated SVD."""
    shape = delta.shape
    mat = delta.reshape(shape[0], -1).float()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    k = pick_rank(s, max_rank or rank, method, param)
    up = u[:, :k] * s[:k] * (k / alpha)  # fold the scale so the file-wide alpha stays right
    down = vh[:k]
    if len(shape) == 4:
        down = down.reshape(k, shape[1], shape[2], shape[3])
        up = up.reshape(shape[0], k, 1, 1)
    return down.contiguous(), up.contiguous(), k


def _write(out: str | Path, tensors: dict, metadata: dict, precision: str, ranks: list[int], alpha: float,
           comment: str) -> ToolResult:
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    dims = set(ranks)
    meta["ss_network_dim"] = str(ranks[0]) if len(dims) == 1 else "Dynamic"
    meta["ss_network_alpha"] = str(alpha)
    old = meta.get("ss_training_comment", "None")
    meta["ss_training_comment"] = comment + ("" if old in ("", "None") else f"; {old}")
    save_lora_file(out, tensors, meta, precision=precision)
    counts: dict[int, int] = {}
    for r in ranks:
        counts[r] = counts.get(r, 0) + 1
    return ToolResult(Path(out), len(ranks), dict(sorted(counts.items())), alpha)


def resize_lora(src: str | Path, out: str | Path, new_rank: int, *, method: str | None = None, param: float = 0.0,
                precision: str = "fp16") -> ToolResult:
    """sd-scripts resize_lora: per module SVD of ΔW, keep `new_rank` (or a dynamic rank ≤ new_rank);
    the file alpha becomes old_alpha / old_rank × new_rank (the same scale as before)."""
    if new_rank < 1:
        raise UserError("the new rank must be at least 1", field="new_rank", fix="use e.g. 4, 8 or 16")
    if method not in (None, "", *DYNAMIC_METHODS):
        raise UserError(f"unknown dynamic method '{method}'", field="dynamic_method", fix=f"use one of {DYNAMIC_METHODS}")
    if method == "sv_ratio" and param < 2:
        raise UserError("sv_ratio needs a parameter of at least 2", field="dynamic_param", fix="try 8")
    if method in ("sv_fro", "sv_cumulative") and not 0 < param <= 1:
        raise UserError(f"{method} needs a parameter in (0, 1]", field="dynamic_param", fix="try 0.9")
    tensors, meta = read_lora_file(src)
    names = module_names(tensors)
    if not names:
        raise UserError(f"'{src}' has no LoRA modules", file=str(src), fix="choose a kohya LoRA .safetensors file")
    first = names[0]
    old_rank = tensors[f"{first}.lora_down.weight"].shape[0]
    old_alpha = float(tensors.get(f"{first}.alpha", torch.tensor(float(old_rank))))
    alpha = old_alpha / old_rank * new_rank
    out_t: dict[str, torch.Tensor] = {}
    ranks = []
    for name in names:
        down, up, k = factor(module_delta(tensors, name), new_rank, alpha, method or None, param)
        out_t[f"{name}.lora_down.weight"], out_t[f"{name}.lora_up.weight"] = down, up
        out_t[f"{name}.alpha"] = torch.tensor(alpha)
        ranks.append(k)
    how = f"dynamic {method} {param}" if method else "fixed"
    return _write(out, out_t, meta, precision, ranks, alpha,
                  f"dimension is resized from {old_rank} to {new_rank} ({how})")


def parse_merge_inputs(items: list[str]) -> tuple[list[str], list[float]]:
    """`FILE`, `FILE:RATIO` or `FILE RATIO` per item (blank items skipped) → (files, ratios); ratio 1 when absent.
    A drive letter (`C:\\x.safetensors`) is not mistaken for a ratio."""
    files, ratios = [], []
    for n, raw in enumerate(items, start=1):
        item = raw.strip()
        if not item:
            continue
        path, ratio = item, "1"
        head, sep, tail = item.rpartition(":")
        if sep and head and not any(c in tail for c in "/\\") and not tail.lower().endswith((".safetensors", ".pt")):
            path, ratio = head, tail
        elif " " in item:
            head, _, tail = item.rpartition(" ")
            path, ratio = head, tail
        try:
            ratios.append(float(ratio))
        except ValueError:
            raise UserError(f"item {n} ('{item}'): '{ratio}' is not a ratio", field="ratios",
                            fix="write path/to/lora.safetensors:0.8 (or just the path for 1.0)") from None
        files.append(path.strip())
    return files, ratios


def merge_loras(sources: list[str | Path], ratios: list[float], out: str | Path, *, new_rank: int | None = None,
                precision: str = "fp16") -> ToolResult:
    """Σ ratioᵢ · ΔWᵢ per module. Without `new_rank` the ranks are concatenated (exact); with it, each
    module's sum is reduced to `new_rank` by SVD (works across different ranks)."""
    if len(sources) < 2:
        raise UserError("merging needs at least two LoRA files", field="sources", fix="add another LoRA")
    if len(ratios) != len(sources):
        raise UserError(f"{len(sources)} files but {len(ratios)} ratios", field="ratios", fix="give one ratio per file")
    loaded = [read_lora_file(s) for s in sources]
    families = {m.get("ss_base_model_version", "") for _, m in loaded} - {""}
    if len(families) > 1:
        raise UserError(f"the LoRAs are for different base models ({', '.join(sorted(families))})", field="sources",
                        fix="merge only LoRAs trained on the same model family")
    names = sorted(set().union(*(module_names(t) for t, _ in loaded)))
    out_t: dict[str, torch.Tensor] = {}
    ranks: list[int] = []
    alpha = float(new_rank) if new_rank else 1.0
    for name in names:
        parts = [(t, r) for (t, _), r in zip(loaded, ratios) if f"{name}.lora_down.weight" in t]
        if new_rank:
            delta = sum(r * module_delta(t, name) for t, r in parts)
            down, up, k = factor(delta, new_rank, alpha)
        else:  # concatenate: down = [down₁; down₂], up = [s₁·up₁, s₂·up₂] with sᵢ folding ratio · αᵢ/rᵢ
            k = sum(t[f"{name}.lora_down.weight"].shape[0] for t, _ in parts)
            downs, ups = [], []
            for t, r in parts:
                d, u = t[f"{name}.lora_down.weight"].float(), t[f"{name}.lora_up.weight"].float()
                rank_i = d.shape[0]
                scale_i = r * float(t.get(f"{name}.alpha", torch.tensor(float(rank_i)))) / rank_i
                downs.append(d)
                ups.append(u * scale_i * k / alpha)
            down, up = torch.cat(downs, 0), torch.cat(ups, 1)
        out_t[f"{name}.lora_down.weight"], out_t[f"{name}.lora_up.weight"] = down.contiguous(), up.contiguous()
        out_t[f"{name}.alpha"] = torch.tensor(alpha)
        ranks.append(k)
    meta = dict(loaded[0][1])
    meta["ss_output_name"] = Path(out).stem
    merged = json.dumps([f"{Path(s).name}:{r}" for s, r in zip(sources, ratios)])
    return _write(out, out_t, meta, precision, ranks, alpha, f"merged from {merged}")
