"""Saving nested training state (optimizer and scheduler state dicts, RNG states) without pickle.

A tree of dicts, lists, tuples, numbers, strings, tensors and numpy arrays becomes two files: `<name>.json`
for the structure and `<name>.safetensors` for the arrays. Loading reads JSON and safetensors only, so a
crafted state folder cannot run code. Dict keys keep their type (optimizer states are keyed by int).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

_TENSOR, _ARRAY, _TUPLE, _ITEMS, _FLOAT = "__tensor__", "__ndarray__", "__tuple__", "__items__", "__float__"


class StateFormatError(ValueError):
    pass


def _encode(obj: Any, tensors: dict[str, torch.Tensor], seen: dict[int, str] | None = None) -> Any:
    seen = {} if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = seen.get(id(obj))
        if key is None:  # one copy per tensor object (8-bit optimizers share their quantisation maps)
            key = seen[id(obj)] = str(len(tensors))
            tensors[key] = obj.detach().cpu().clone().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {_ARRAY: key}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, seen)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else {_FLOAT: repr(obj)}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, seen) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, seen) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, seen) for k, v in obj.items()}
        return {_ITEMS: [[_encode(k, tensors, seen), _encode(v, tensors, seen)] for k, v in obj.items()]}
    raise StateFormatError(f"cannot store a {type(obj).__name__} in a training state")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _ARRAY in obj:
        return tensors[obj[_ARRAY]].numpy()
    if _FLOAT in obj:
        return float(obj[_FLOAT])
    if _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if _ITEMS in obj:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_tree(folder: Path, name: str, obj: Any) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(obj, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(structure), encoding="utf-8")


def load_tree(folder: Path, name: str) -> Any:
    from safetensors.torch import load_file

    try:
        structure = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / f"{name}.safetensors"))
        return _decode(structure, tensors)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateFormatError(f"'{folder / name}' is damaged ({exc})") from None
