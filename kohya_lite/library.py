"""The LoRA library: the folder of LoRA files that `<lora:NAME:WEIGHT>` prompt tags refer to.

A1111 rules (lora-file-format §13.1): the folder (`models/Lora` by default) is scanned recursively for
`.safetensors`/`.pt`/`.ckpt`; NAME is the file stem, falling back to the `ss_output_name` alias; a
relative path (`chars/zkz`) picks one of several files with the same stem. Hidden files, the temp files
of atomic writes and training state folders (`*-state/`) are skipped.

Listing reads only the safetensors header (shapes, metadata) plus the scalar `alpha` tensors, so a
folder of large files lists quickly (LyCORIS files too: LoHa, LoKr, … with their algorithm next to the
rank); entries are cached by (path, mtime, size). Other files (and diffusers/peft layouts) go through
`lora_file_info` (below), which reads the whole file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

from kohya_lite.errors import UserError
from kohya_lite.models import families
from kohya_lite.network import naming
from kohya_lite.network.io import family_from_metadata, guess_family_from_keys, load_lora, lycoris_markers
from kohya_lite.paths import DEFAULT_LORA_DIR
from kohya_lite.prompts import format_weight

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
FIELD = "lora_dir"
DEFAULT_INSERT_WEIGHT = 0.8
MAX_HEADER = 100 * 1024 * 1024


@dataclass
class LoraEntry:
    """One LoRA file of the library, as the list and the Generate tab show it."""

    name: str  # what goes in <lora:NAME:…>: the stem, or the relative path when the stem is not unique
    path: Path
    relative: str  # path relative to the library folder, posix, without the suffix
    size_bytes: int
    family: str = ""  # 'sd1' | 'sd2' | 'sdxl' ('' when unreadable)
    base_model_version: str = ""
    rank: int = 0  # most common
    alpha: float = 0.0  # most common
    output_name: str = ""  # ss_output_name (the alias)
    dataset_dirs: list[str] = field(default_factory=list)  # ss_dataset_dirs folder names
    trigger_words: list[str] = field(default_factory=list)
    error: str = ""  # why the file could not be read ('' when fine)
    algo: str = ""  # '' for LoRA/LoCon; the LyCORIS algorithm otherwise ('LoHa', 'LoKr', …)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def family_label(self) -> str:
        return families.info(self.family).label if self.family in families.FAMILIES else "unknown"

    @property
    def trigger_word(self) -> str:
        return self.trigger_words[0] if self.trigger_words else ""

    def row(self) -> list:
        """The table row: name, base model, rank/alpha, size, dataset, trigger words, file."""
        rank_alpha = f"{self.rank} / {self.alpha:g}" if self.rank else ""
        if self.algo:
            rank_alpha = f"{rank_alpha} {self.algo}".strip()
        return [self.name, self.error or self.base_model_version, rank_alpha, format_size(self.size_bytes),
                ", ".join(self.dataset_dirs), ", ".join(self.trigger_words), self.relative + self.path.suffix]


TABLE_HEADERS = ["LoRA", "Base model", "Rank / alpha", "Size", "Trained on", "Trigger words", "File"]


def format_size(n: int) -> str:
    """`512 B`, `37.5 KB`, `144.1 MB`, `1.2 GB`."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


# ---- scanning ------------------------------------------------------------------------------------------

def library_folder(folder: str | os.PathLike | None) -> Path:
    """The library folder as a Path; missing → UserError."""
    text = str(folder or "").strip()
    p = Path(text).expanduser() if text else DEFAULT_LORA_DIR
    if not p.is_dir():
        raise UserError(f"the LoRA folder '{p}' does not exist", field=FIELD, file=str(p),
                        fix=f"create it and put your LoRA .safetensors files there, or choose another folder "
                            f"(default: {DEFAULT_LORA_DIR})")
    return p


def lora_files(folder: str | os.PathLike) -> list[Path]:
    """Every LoRA file under `folder`, recursively, sorted by relative path."""
    root = library_folder(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith("-state"))
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(LORA_SUFFIXES) and ".tmp" not in fn:
                found.append(Path(dirpath) / fn)
    return sorted(found, key=lambda p: relative_name(p, root).lower())


def relative_name(path: Path, root: Path) -> str:
    """`chars/zkz` for `<root>/chars/zkz.safetensors`."""
    rel = path.relative_to(root)
    return rel.with_suffix("").as_posix()


# ---- reading one file -------------------------------------------------------------------------------------

def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file (tensor dtypes/shapes and `__metadata__`), without the data."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > MAX_HEADER:
                raise ValueError(f"implausible header length {n}")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise UserError(f"'{p.name}' is not a readable safetensors file ({exc})", file=str(p),
                        fix="the file may be incomplete: copy or download it again") from None
    if not isinstance(header, dict):
        raise UserError(f"'{p.name}' has a damaged header", file=str(p), fix="copy or download it again")
    return header


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """`__metadata__` of a safetensors file ({} for other files)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _dataset_dirs(metadata: dict[str, str]) -> list[str]:
    try:
        dirs = json.loads(metadata.get("ss_dataset_dirs", "") or "{}") or {}
    except json.JSONDecodeError:
        return []
    return [str(d) for d in dirs] if isinstance(dirs, dict) else []


def _kohya_header_info(path: Path, header: dict) -> dict | None:
    """Family, rank and alpha from a kohya-layout header (+ the alpha scalars); None for other layouts."""
    from safetensors import safe_open

    keys = [k for k in header if k != "__metadata__"]
    prefixes = tuple(p + "_" for p in naming.ALL_PREFIXES)
    if not keys or not all(k.startswith(prefixes) for k in keys):
        return None
    if lycoris_markers(keys, kohya=True):
        return _lycoris_header_info(path, header, keys)
    downs = {k: header[k].get("shape", []) for k in keys if k.endswith(".lora_down.weight")}
    if not downs:
        return None
    ranks = Counter(int(s[0]) for s in downs.values() if s)
    alphas: Counter = Counter()
    with safe_open(str(path), framework="pt") as f:
        for k in downs:
            name = k[: -len(".lora_down.weight")]
            a = f"{name}.alpha"
            rank = int(downs[k][0]) if downs[k] else 0
            alphas[float(f.get_tensor(a).float().item()) if a in header else float(rank)] += 1
    meta = header.get("__metadata__") or {}
    family = family_from_metadata(meta) or guess_family_from_keys(
        {k: SimpleNamespace(shape=tuple(header[k].get("shape", ()))) for k in keys})
    return {"family": family, "rank": ranks.most_common(1)[0][0], "alpha": alphas.most_common(1)[0][0]}


def _lycoris_header_info(path: Path, header: dict, keys: list[str]) -> dict:
    """Family, algorithm, most common rank and alpha of a LyCORIS file from its header (+ the alpha scalars)."""
    from safetensors import safe_open

    from kohya_lite.network.lycoris import algo_label, file_summary

    shapes = {k: SimpleNamespace(shape=tuple(header[k].get("shape", ()))) for k in keys}
    summary = file_summary({k: v for k, v in shapes.items() if not k.endswith(".alpha")})
    alphas: Counter = Counter()
    with safe_open(str(path), framework="pt") as f:
        for k in keys:
            if k.endswith(".alpha"):
                alphas[float(f.get_tensor(k).float().item())] += 1
    ranks = Counter(summary["ranks"])
    meta = header.get("__metadata__") or {}
    return {"family": family_from_metadata(meta) or guess_family_from_keys(shapes),
            "rank": ranks.most_common(1)[0][0] if ranks else 0,
            "alpha": alphas.most_common(1)[0][0] if alphas else 0.0, "algo": algo_label(summary["algos"])}


_CACHE: dict[tuple, LoraEntry] = {}


def read_entry(path: str | os.PathLike, root: str | os.PathLike | None = None) -> LoraEntry:
    """A library entry for one file (never raises for a bad file: `error` says what is wrong)."""
    p = Path(path)
    root_p = Path(root) if root is not None else p.parent
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    rel = relative_name(p, root_p)
    cached = _CACHE.get(key)
    if cached is not None:
        return replace(cached, name=p.stem, relative=rel, path=p)
    entry = LoraEntry(name=p.stem, path=p, relative=rel, size_bytes=st.st_size)
    try:
        _fill(entry)
    except UserError as exc:
        entry.error = exc.message
    except Exception as exc:  # noqa: BLE001 - a damaged file is listed with its problem, not fatal
        entry.error = f"unreadable ({type(exc).__name__}: {exc})"
    if len(_CACHE) > 2048:
        _CACHE.clear()
    _CACHE[key] = entry
    return replace(entry)


def _fill(entry: LoraEntry) -> None:
    p = entry.path
    info = None
    meta: dict[str, str] = {}
    if p.suffix.lower() == ".safetensors":
        header = read_safetensors_header(p)
        meta = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
        info = _kohya_header_info(p, header)
    if info is None:  # .pt/.ckpt, diffusers/peft layout: read the tensors
        full = lora_file_info(p)
        meta = full.metadata
        info = {"family": full.family, "rank": full.rank, "alpha": full.alpha,
                "algo": full.algo if full.algo != "LoRA" else ""}
    v_pred = meta.get("modelspec.prediction_type") == "v" or meta.get("ss_base_model_version") == "sd_v2_v"
    entry.family = info["family"]
    entry.rank, entry.alpha = int(info["rank"]), float(info["alpha"])
    entry.algo = info.get("algo", "")
    entry.base_model_version = meta.get("ss_base_model_version") or families.base_model_version(entry.family, v_pred)
    entry.output_name = meta.get("ss_output_name", "")
    entry.dataset_dirs = _dataset_dirs(meta)
    entry.trigger_words = trigger_words(meta)


def list_library(folder: str | os.PathLike | None = None) -> list[LoraEntry]:
    """Every LoRA in the library folder, with `name` set to what a prompt tag should say: the stem, or the
    relative path when several files share that stem."""
    root = library_folder(folder)
    entries = [read_entry(p, root) for p in lora_files(root)]
    stems = Counter(e.stem.lower() for e in entries)
    for e in entries:
        e.name = e.stem if stems[e.stem.lower()] == 1 else e.relative
    return entries


def table_rows(entries: list[LoraEntry]) -> list[list]:
    return [e.row() for e in entries]


# ---- resolving a tag name -----------------------------------------------------------------------------------

def _strip_suffix(name: str) -> str:
    low = name.lower()
    for suf in LORA_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _pick(matches: list[Path], name: str, root: Path) -> Path | None:
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        rels = ", ".join(relative_name(m, root) + m.suffix for m in matches[:5])
        raise UserError(f"several LoRAs are called '{name}': {rels}", field="prompt", file=str(root),
                        fix=f"write the path inside the LoRA folder, e.g. <lora:{relative_name(matches[0], root)}:1>")
    return None


def _match(files: list[Path], name: str, key) -> list[Path]:
    exact = [f for f in files if key(f) == name]
    return exact or [f for f in files if key(f).lower() == name.lower()]


def find_lora(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The file a `<lora:NAME:…>` tag means: relative path, else file stem, else `ss_output_name` (exact
    case first, then any case). Unknown → UserError naming close matches."""
    root = library_folder(folder)
    name = _strip_suffix(name.strip().replace("\\", "/"))
    files = lora_files(root)
    if "/" in name:
        hit = _pick(_match(files, name.strip("/"), lambda f: relative_name(f, root)), name, root)
        if hit:
            return hit
    hit = _pick(_match(files, name, lambda f: f.stem), name, root)
    if hit:
        return hit
    aliases: dict[Path, str] = {}
    for f in files:
        try:
            alias = read_metadata(f).get("ss_output_name", "")
        except UserError:
            alias = ""
        if alias:
            aliases[f] = alias
    hit = _pick(_match(list(aliases), name, lambda f: aliases[f]), name, root)
    if hit:
        return hit
    raise _unknown(name, root, files, aliases)


def close_matches(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Candidates that look like `name`: difflib ratio ≥ 0.5, or containing / contained in it."""
    low = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(low), n=n, cutoff=0.5)
    found += [c for c in low if name.lower() and (name.lower() in c or c in name.lower()) and c not in found]
    out: list[str] = []
    for c in found:
        if low[c] not in out:
            out.append(low[c])
    return out[:n]


def _unknown(name: str, root: Path, files: list[Path], aliases: dict[Path, str]) -> UserError:
    candidates = [f.stem for f in files] + list(aliases.values()) + [relative_name(f, root) for f in files]
    near = close_matches(name, candidates)
    msg = f"no LoRA named '{name}' in '{root}'"
    if near:
        msg += f" (close matches: {', '.join(near)})"
    if files:
        fix = ("NAME in <lora:NAME:WEIGHT> is the file name without .safetensors; "
               f"the folder holds {len(files)} LoRA file{'s' if len(files) != 1 else ''}")
    else:
        fix = f"the folder holds no LoRA files: copy the .safetensors file into '{root}'"
    return UserError(msg, field="prompt", file=str(root), fix=fix)


# ---- prompt text ---------------------------------------------------------------------------------------------

def insert_text(entry: LoraEntry, weight: float = DEFAULT_INSERT_WEIGHT) -> str:
    """`<lora:name:0.8>` plus the trigger word, ready to add to a prompt."""
    tag = f"<lora:{entry.name}:{format_weight(weight)}>"
    return f"{tag} {entry.trigger_word}" if entry.trigger_word else tag


def add_to_prompt(prompt: str, text: str) -> str:
    """`prompt, text` (no separator doubling; nothing added when the prompt already holds the text)."""
    prompt = prompt or ""
    if not text or text in prompt:
        return prompt
    body = prompt.rstrip()
    if not body:
        return text
    return f"{body} {text}" if body.endswith(",") else f"{body}, {text}"


# ---- one file in full: what `lora info` and the tools show ----------------------------------------------------------------------------------------------

@dataclass
class LoraInfo:
    path: str
    family: str
    family_source: str
    base_model_version: str
    layout: str
    num_tensors: int
    dtype: str
    size_bytes: int
    modules: dict[str, int]  # per component: unet / text_encoder / text_encoder_2
    conv_modules: int  # k×k (LoCon) modules
    rank: int  # most common
    alpha: float  # most common
    ranks: dict[int, int]
    alphas: dict[float, int]
    output_name: str
    title: str
    trigger_words: list[str]
    sshs_model_hash: str
    metadata: dict[str, str]
    algo: str = "LoRA"  # 'LoRA', or the LyCORIS algorithm(s): 'LoHa', 'LoKr', 'LoCon + Norm', …
    lycoris: dict[str, Any] = field(default_factory=dict)  # LyCORIS files: network.lycoris.file_summary

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0


def _folder_class_token(folder: str) -> str:
    m = re.match(r"^\d+_(.+)$", folder)
    return (m[1] if m else folder).strip()


def trigger_words(metadata: Mapping[str, str], limit: int = 10) -> list[str]:
    """Likely activation text: `modelspec.trigger_phrase`, the dataset folders' class tokens, then the most
    frequent caption tags (from `ss_tag_frequency`)."""
    words: list[str] = []

    def add(w: str) -> None:
        w = w.strip()
        if w and w not in words:
            words.append(w)

    for phrase in metadata.get("modelspec.trigger_phrase", "").split(","):
        add(phrase)
    freq: dict = {}
    try:
        freq = json.loads(metadata.get("ss_tag_frequency", "") or "{}") or {}
    except json.JSONDecodeError:
        pass
    dirs: dict = {}
    try:
        dirs = json.loads(metadata.get("ss_dataset_dirs", "") or "{}") or {}
    except json.JSONDecodeError:
        pass
    for folder in list(dirs) + list(freq):
        add(_folder_class_token(folder))
    totals: Counter = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                totals.update({str(t): int(c) for t, c in tags.items() if isinstance(c, (int, float))})
    for tag, _ in totals.most_common():
        if len(words) >= limit:
            break
        add(tag)
    return words[:limit]


def lora_file_info(path: str | Path) -> LoraInfo:
    """Summary of a LoRA file for the LoRA tools and the UI."""
    from kohya_lite.models import families

    lf = load_lora(path, allow_lycoris=True)
    names = lf.module_names()
    modules = Counter(naming.te_component(naming.split_prefix(n)[0]) if not n.startswith("lora_unet_") else naming.UNET
                      for n in names)
    algo, summary = "LoRA", {}
    if lf.is_lycoris:
        from kohya_lite.network.lycoris import algo_label, file_summary

        summary = file_summary(lf.tensors)
        algo = algo_label(summary["algos"])
        ranks, alphas = Counter(summary["ranks"]), Counter(summary["alphas"])
        conv = sum(1 for k, v in lf.tensors.items() if k.endswith(".lora_down.weight") and v.dim() == 4
                   and tuple(v.shape[2:]) != (1, 1))
    else:
        ranks = Counter(int(lf.tensors[f"{n}.lora_down.weight"].shape[0]) for n in names)
        alphas = Counter(float(lf.tensors[f"{n}.alpha"]) for n in names)
        conv = sum(1 for n in names if lf.tensors[f"{n}.lora_down.weight"].dim() == 4
                   and tuple(lf.tensors[f"{n}.lora_down.weight"].shape[2:]) != (1, 1))
    dtypes = Counter(str(v.dtype).replace("torch.", "") for k, v in lf.tensors.items()
                     if v.is_floating_point() and not k.endswith((".alpha", ".on_input")))
    meta = lf.metadata
    v_pred = meta.get("modelspec.prediction_type") == "v" or meta.get("ss_base_model_version") == "sd_v2_v"
    return LoraInfo(
        path=str(path), family=lf.family, family_source=lf.family_source,
        base_model_version=meta.get("ss_base_model_version") or families.base_model_version(lf.family, v_pred),
        layout=lf.layout, num_tensors=len(lf.tensors), dtype=dtypes.most_common(1)[0][0] if dtypes else "",
        size_bytes=Path(path).stat().st_size, modules=dict(modules), conv_modules=conv,
        rank=ranks.most_common(1)[0][0] if ranks else 0, alpha=alphas.most_common(1)[0][0] if alphas else 0.0,
        ranks=dict(ranks), alphas=dict(alphas), output_name=meta.get("ss_output_name", Path(path).stem),
        title=meta.get("modelspec.title", ""), trigger_words=trigger_words(meta),
        sshs_model_hash=meta.get("sshs_model_hash", ""), metadata=dict(meta), algo=algo, lycoris=summary)
