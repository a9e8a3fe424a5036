"""Finding a captioning model on this computer; never downloading one.

A model is given as a Hugging Face repo id (looked up in the local Hugging Face cache only) or as a
folder (`model_dir`, or a path in place of the id). kohya's WD14 layout `<model_dir>/<owner_name>/`
is accepted too. When the files are not there, the UserError names the model, every place looked in,
and the commands that get it onto the machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kohya_lite.errors import UserError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelKind:
    """What a usable folder of one kind of model holds."""

    label: str  # "BLIP captioning model"
    required: tuple[tuple[str, ...], ...]  # each group: one of these files must exist
    download_files: tuple[str, ...] = ()  # files to name in the download command (all when empty)

    def missing(self, folder: Path) -> list[str]:
        return [" or ".join(group) for group in self.required if not any((folder / f).is_file() for f in group)]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache this process would use (read from the environment on each call)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cache_folder_name(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def looks_like_repo_id(model: str) -> bool:
    return bool(_REPO_ID.match(model)) and not Path(model).expanduser().exists()


def _download_fix(kind: ModelKind, repo_id: str, flag: str) -> str:
    files = " " + " ".join(kind.download_files) if kind.download_files else ""
    local = repo_id.split("/")[-1]
    return (
        f"On a machine with internet run `hf download {repo_id}{files} --local-dir {local}` "
        f"(older huggingface_hub: `huggingface-cli download {repo_id}{files} --local-dir {local}`), copy the "
        f"'{local}' folder here and set the model folder to it ({flag} /path/to/{local}); or run "
        f"`hf download {repo_id}{files}` on this computer while it is online, so it lands in the Hugging Face "
        f"cache ({hf_cache_dir()})."
    )


def _check_folder(kind: ModelKind, folder: Path, model: str, field: str, flag: str) -> Path:
    missing = kind.missing(folder)
    if missing:
        raise UserError(
            f"{kind.label} folder '{folder}' is incomplete: missing {', '.join(missing)}.",
            field=field, file=str(folder),
            fix=(_download_fix(kind, model, flag) if looks_like_repo_id(model)
                 else f"Copy the complete model folder there, or pass {flag} with a folder that holds it."),
        )
    return folder


def _from_model_dir(kind: ModelKind, model: str, model_dir: str | Path, flag: str) -> Path:
    root = Path(model_dir).expanduser()
    is_repo = bool(_REPO_ID.match(model or ""))
    fix = _download_fix(kind, model, flag) if is_repo else f"Pass {flag} with the folder that holds the model files."
    if not root.is_dir():
        raise UserError(f"{kind.label} folder '{root}' does not exist.", field="model_dir", file=str(root), fix=fix)
    candidates = [root] + ([root / model.replace("/", "_")] if is_repo else [])  # kohya: <model_dir>/<owner_name>/
    for folder in candidates:
        if folder.is_dir() and not kind.missing(folder):
            return folder
    looked = " and ".join(f"'{c}'" for c in candidates)
    raise UserError(
        f"{kind.label} not found in '{root}': missing {', '.join(kind.missing(root))} (looked in {looked}).",
        field="model_dir", file=str(root), fix=fix,
    )


def _from_cache(kind: ModelKind, repo_id: str, flag: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hf_cache_dir()
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise UserError(
            f"{kind.label} '{repo_id}' is not on this computer (kohya-lite never downloads models). "
            f"Looked in the Hugging Face cache: {cache / cache_folder_name(repo_id)}",
            field="model", file=str(cache / cache_folder_name(repo_id)), fix=_download_fix(kind, repo_id, flag),
        ) from None
    return _check_folder(kind, folder, repo_id, "model", flag)


def resolve_model_folder(kind: ModelKind, model: str, model_dir: str | Path | None = None,
                         *, flag: str = "--model-dir") -> Path:
    """The local folder holding `model`: from `model_dir`, a folder path, or the Hugging Face cache."""
    model = (model or "").strip()
    if model_dir and str(model_dir).strip():
        return _from_model_dir(kind, model, model_dir, flag)
    if not model:
        raise UserError(f"No {kind.label} given.", field="model", fix=f"Give a model id or {flag}.")
    path = Path(model).expanduser()
    if path.is_dir():
        return _check_folder(kind, path, model, "model", flag)
    if looks_like_repo_id(model):
        return _from_cache(kind, model, flag)
    raise UserError(f"{kind.label} folder '{path}' does not exist.", field="model", file=str(path),
                    fix="Give an existing folder, or a Hugging Face id such as owner/name that is in the cache.")
