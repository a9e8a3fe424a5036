"""LyCORIS networks (LoCon, LoHa, LoKr, iA3, GLoRA, Diag-OFT, BOFT, native fine-tuning, DoRA) through the
lycoris-lora library, the way kohya_ss trains them: `network_module=lycoris.kohya` with its `network_args`.

Creating a network
- `network_args(cfg)` is the `k=v` list kohya_ss writes for the LoRA type (its lora_gui.py), values as strings.
- `LycorisNetwork.create` hands those strings, with rank and alpha, to the library's own kohya entry point
  (`lycoris.kohya.create_network`), so the algorithm, the preset's module selection and every option are
  parsed exactly as sd-scripts + lycoris parse them (string quirks included: for LoKr `use_cp` decides Tucker,
  `train_on_input` and `rank_dropout_scale` are not passed on by the wrapper).
- The wrapper walks our diffusers models. Two class names differ from sd-scripts' own UNet, so the preset is
  adapted before the walk (`diffusers_preset`): sd-scripts' attention class is `CrossAttention` (diffusers:
  `Attention`), and lycoris 4.1 lists `TimestepEmbedding` (for Anima) next to the `time_embedding.linear_*`
  names, which selects those two Linear twice on SD UNets (the library then stops with "duplicated lora name").
- The modules are then named as sd-scripts names them on its own models (`adopt`): kohya names from
  `naming` (SGM for the SDXL UNet, the fixed `text_model_` template for the text encoders). sd-scripts' SDXL
  UNet keeps conv_in/conv_out/time and label embeddings in plain Sequential/Conv modules that no preset selects,
  so modules outside down/mid/up blocks are left out on SDXL.

Files: the library's tensor names per module (`lora_down/lora_up[/lora_mid]`, `hada_w1_a…`, `lokr_w1…`,
`dora_scale`, `weight`+`on_input`, `oft_blocks`, `diff`, `w_norm`, …, and `alpha`), `ss_network_module =
lycoris.kohya`, `ss_network_args` the JSON of the args (network_dropout stays in `ss_network_dropout`).

ΔW (`module_delta`, `lycoris_deltas`): what every module of a LyCORIS file changes in a model's weights, built
with the library's own module classes on an fp32 CPU copy of the base layer; Generate merges it and the LoRA
tools (merge into a model) can use it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from kohya_lite.config import LYCORIS_PRESETS, TrainingConfig
from kohya_lite.errors import UserError
from kohya_lite.network import naming
from kohya_lite.network.base import AdapterNetwork, component_of_name, weights_mismatch
from kohya_lite.network.lora import LoadResult, ModuleIndex, _unet_layout, te_root

NETWORK_MODULE = "lycoris.kohya"
ALGOS = {
    "LyCORIS/LoCon": "locon", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr", "LyCORIS/iA3": "ia3",
    "LyCORIS/DyLoRA": "dylora", "LyCORIS/GLoRA": "glora", "LyCORIS/Diag-OFT": "diag-oft", "LyCORIS/BOFT": "boft",
    "LyCORIS/Native Fine-Tuning": "full",
}
ALGO_LABELS = {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "ia3": "iA3", "glora": "GLoRA", "diag-oft": "Diag-OFT",
               "boft": "BOFT", "full": "Native fine-tuning", "norm": "Norm", "dylora": "DyLoRA"}
UNET_BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")


def is_lycoris_type(lora_type: str) -> bool:
    return lora_type in ALGOS


# ---- kohya_ss's network_args ------------------------------------------------------------------------------

def _s(value: Any) -> str:
    """A value as kohya_ss writes it into `network_args` (8.0 → '8', True → 'True')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# The args kohya_ss's lora_gui.py writes per LyCORIS type, in its order (config key → network arg).
_ARGS: dict[str, tuple[tuple[str, str], ...]] = {
    "boft": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
             ("module_dropout", "module_dropout"), ("use_tucker", "use_tucker"), ("rank_dropout", "rank_dropout"),
             ("rank_dropout_scale", "rank_dropout_scale"), ("algo", ""), ("train_norm", "train_norm")),
    "diag-oft": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
                 ("module_dropout", "module_dropout"), ("use_tucker", "use_tucker"), ("rank_dropout", "rank_dropout"),
                 ("rank_dropout_scale", "rank_dropout_scale"), ("constraint", "constrain"), ("rescaled", "rescaled"),
                 ("algo", ""), ("train_norm", "train_norm")),
    "dylora": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
               ("use_tucker", "use_tucker"), ("block_size", "unit"), ("rank_dropout", "rank_dropout"),
               ("module_dropout", "module_dropout"), ("algo", ""), ("train_norm", "train_norm")),
    "glora": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
              ("use_tucker", "use_tucker"), ("rank_dropout", "rank_dropout"), ("module_dropout", "module_dropout"),
              ("rank_dropout_scale", "rank_dropout_scale"), ("algo", ""), ("train_norm", "train_norm")),
    "ia3": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
            ("train_on_input", "train_on_input"), ("algo", "")),
    "locon": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
              ("use_tucker", "use_tucker"), ("rank_dropout", "rank_dropout"), ("bypass_mode", "bypass_mode"),
              ("dora_wd", "dora_wd"), ("module_dropout", "module_dropout"), ("use_scalar", "use_scalar"),
              ("rank_dropout_scale", "rank_dropout_scale"), ("algo", ""), ("train_norm", "train_norm")),
    "lokr": (("preset", "LyCORIS_preset"), ("conv_dim", "conv_dim"), ("conv_alpha", "conv_alpha"),
             ("use_tucker", "use_tucker"), ("rank_dropout", "rank_dropout"), ("bypass_mode", "bypass_mode"),
             ("dora_wd", "dora_wd"), ("module_dropout", "module_dropout"), ("factor", "factor"), ("use_cp", "use_cp"),
             ("use_scalar", "use_scalar"), ("decompose_both", "decompose_both"),
             ("rank_dropout_scale", "rank_dropout_scale"), ("algo", ""), ("train_norm", "train_norm")),
    "full": (("preset", "LyCORIS_preset"), ("rank_dropout", "rank_dropout"), ("module_dropout", "module_dropout"),
             ("rank_dropout_scale", "rank_dropout_scale"), ("algo", ""), ("train_norm", "train_norm")),
}
_ARGS["loha"] = tuple((k, ("" if k == "algo" else f)) for k, f in _ARGS["locon"])
LORAPLUS_KEYS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")


def network_args(cfg: TrainingConfig) -> dict[str, str]:
    """`network_args` of a LyCORIS LoRA type as kohya_ss passes them to sd-scripts (all values strings)."""
    algo = ALGOS[cfg.LoRA_type]
    args: dict[str, str] = {}
    for key, field_name in _ARGS[algo]:
        args[key] = algo if key == "algo" else _s(getattr(cfg, field_name))
    for key in LORAPLUS_KEYS:
        if getattr(cfg, key):
            args[key] = _s(getattr(cfg, key))
    return args


# ---- the library, adapted to diffusers models ---------------------------------------------------------------

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The library logs every module table at INFO and unmatched preset classes as warnings."""
    from lycoris.logging import logger

    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def resolve_preset(preset: str) -> dict:
    """A builtin preset by name, or a .toml preset file (as lycoris reads it); UserError otherwise."""
    from lycoris.config import PRESET
    from lycoris.utils.preset import read_preset

    if preset in PRESET:
        return copy.deepcopy(PRESET[preset])
    path = Path(preset).expanduser()
    if not path.is_file():
        raise UserError(f"LyCORIS preset '{preset}' is neither a preset name nor a file", field="LyCORIS_preset",
                        fix=f"choose one of {', '.join(LYCORIS_PRESETS)}, or give the path of a .toml preset")
    with contextlib.redirect_stdout(None):  # the library prints its parse errors
        loaded = read_preset(str(path))
    if loaded is None:
        raise UserError(f"LyCORIS preset file '{preset}' cannot be read as a lycoris preset", field="LyCORIS_preset",
                        file=str(path), fix="check the TOML (keys: enable_conv, unet_target_module, …)")
    return loaded


def diffusers_preset(preset: dict) -> dict:
    """The preset as it acts on sd-scripts' UNet, for our diffusers UNet (see the module doc), with every key set
    (the library keeps earlier presets' keys in class attributes otherwise)."""
    p = copy.deepcopy(preset)
    modules = list(p.get("unet_target_module", []))
    names = list(p.get("unet_target_name", []))
    if "CrossAttention" in modules and "Attention" not in modules:
        modules.append("Attention")
    if "TimestepEmbedding" in modules and any(str(n).startswith("time_embedding") for n in names):
        modules.remove("TimestepEmbedding")
    p["unet_target_module"] = modules
    p.setdefault("unet_target_name", [])
    p.setdefault("text_encoder_target_module", [])
    p.setdefault("text_encoder_target_name", [])
    p.setdefault("enable_conv", True)
    p.setdefault("module_algo_map", {})
    p.setdefault("name_algo_map", {})
    p.setdefault("use_fnmatch", False)
    p.setdefault("exclude_name", [])
    return p


@contextlib.contextmanager
def _registered_preset(preset: dict) -> Iterator[str]:
    """Make `preset` selectable by name for `lycoris.kohya.create_network` for the duration of the call."""
    from lycoris.config import PRESET

    key = "kohya-lite"
    PRESET[key] = preset
    try:
        yield key
    finally:
        PRESET.pop(key, None)


@dataclass
class _Adopted:
    name: str
    component: str
    path: str  # module path inside the component (for text encoders: inside the `text_model` level)
    module: nn.Module  # the lycoris module


def _module_paths(model: Any) -> dict[int, tuple[str, str, str]]:
    """id(module) → (component, path, kohya prefix) for the UNet and the text encoders."""
    out: dict[int, tuple[str, str, str]] = {}
    for prefix, te in zip(naming.te_prefixes(model.family), model.text_encoders):
        for path, m in te_root(te).named_modules():
            out[id(m)] = (naming.te_component(prefix), path, prefix)
    for path, m in model.unet.named_modules():
        out[id(m)] = (naming.UNET, path, naming.UNET_PREFIX)
    return out


def kohya_name(model: Any, component: str, path: str, prefix: str) -> str:
    """sd-scripts' module name for a module path of our models (UNet: SGM on SDXL; TEs: `text_model_…`)."""
    if component == naming.UNET:
        return naming.unet_lora_name(path, model.family, **_unet_layout(model.unet))
    return naming.to_kohya(prefix, "text_model." + path)


def adopt(model: Any, loras: Iterable[nn.Module]) -> tuple[list[_Adopted], list[str]]:
    """Name the library's modules as sd-scripts does; returns (kept, notes)."""
    paths = _module_paths(model)
    kept: list[_Adopted] = []
    dropped: list[str] = []
    for lora in loras:
        where = paths.get(id(lora.org_module[0]))
        if where is None:
            dropped.append(lora.lora_name)
            continue
        component, path, prefix = where
        if model.family == "sdxl" and component == naming.UNET and not path.startswith(UNET_BLOCKS):
            dropped.append(path)
            continue
        name = kohya_name(model, component, path, prefix)
        lora.lora_name = name
        kept.append(_Adopted(name, component, path, lora))
    notes = []
    if dropped:
        notes.append(f"left out {len(dropped)} modules sd-scripts' UNet does not offer to this preset "
                     f"({', '.join(dropped[:4])}{', …' if len(dropped) > 4 else ''})")
    return kept, notes


class _Empty(nn.Module):
    """Stands in for a part that is not trained (the wrapper always walks a UNet)."""


def create_library_network(cfg: TrainingConfig, model: Any, *, train_unet: bool = True,
                           train_text_encoder: bool = True) -> Any:
    """`lycoris.kohya.create_network` on our models with kohya_ss's args for `cfg` (names not yet adopted)."""
    from lycoris import kohya

    from kohya_lite.network.factory import effective_alpha

    algo = ALGOS[cfg.LoRA_type]
    args: dict[str, Any] = network_args(cfg)
    args["dropout"] = cfg.network_dropout  # sd-scripts adds it for LyCORIS
    preset = diffusers_preset(resolve_preset(args["preset"]))
    tes = list(model.text_encoders) if train_text_encoder else []
    te_arg = (tes if len(tes) > 1 else tes[0]) if tes else None
    unet = model.unet if train_unet else _Empty()
    try:
        with _quiet(), _registered_preset(preset) as key:
            return kohya.create_network(1.0, int(cfg.network_dim), effective_alpha(cfg.network_alpha), None, te_arg,
                                        unet, warn_on_unmatched=False, **dict(args, preset=key))
    except (ValueError, AssertionError, RuntimeError, KeyError) as exc:
        raise UserError(f"lycoris could not build a {ALGO_LABELS.get(algo, algo)} network on this model: {exc}",
                        field="LoRA_type",
                        fix="change the rank (network_dim/conv_dim), the LoKr factor or the preset; BOFT and OFT "
                            "need layer widths their block size divides") from None


# ---- the network ----------------------------------------------------------------------------------------------

class LycorisNetwork(AdapterNetwork):
    """The library's modules for one model under kohya names, with the engine's network interface. Its
    `state_dict()` is the file layout: `<name>.<tensor>` with the library's tensor names."""

    def __init__(self, adopted: Iterable[_Adopted], family: str, *, algo: str, multiplier: float = 1.0):
        adopted = list(adopted)
        for a in adopted:
            a.module.multiplier = multiplier
        super().__init__([(a.name, a.module, a.component) for a in adopted], family, multiplier=multiplier)
        self.algo = algo
        self.notes: list[str] = []

    # -- construction --
    @classmethod
    def create(cls, cfg: TrainingConfig, model: Any, *, train_unet: bool = True,
               train_text_encoder: bool = True) -> "LycorisNetwork":
        lib = create_library_network(cfg, model, train_unet=train_unet, train_text_encoder=train_text_encoder)
        loras = (lib.text_encoder_loras if train_text_encoder else []) + (lib.unet_loras if train_unet else [])
        adopted, notes = adopt(model, loras)
        if not adopted:
            raise UserError(f"the LyCORIS preset '{cfg.LyCORIS_preset}' selects no module of this model to train",
                            field="LyCORIS_preset", fix="use the 'full' preset")
        net = cls(adopted, model.family, algo=ALGOS[cfg.LoRA_type])
        net.notes = notes
        return net

    @classmethod
    def from_weights(cls, model: Any, tensors: Mapping[str, torch.Tensor], *, train_unet: bool = True,
                     train_text_encoder: bool = True, multiplier: float = 1.0) -> "LycorisNetwork":
        """A network shaped like a LyCORIS file (each module's algorithm and size from its tensors, sd-scripts'
        `dim_from_weights`), with the file's weights loaded; the parts not trained are left out. Modules this
        model lacks are a UserError."""
        groups = group_modules(tensors)
        index = ModuleIndex(model)
        adopted, missing, algos = [], [], Counter()
        for name, group in sorted(groups.items()):
            is_unet = name.startswith(naming.UNET_PREFIX + "_")
            if (is_unet and not train_unet) or (not is_unet and not train_text_encoder):
                continue
            org = index.get(name, norms=True)
            if org is None:
                missing.append(name)
                continue
            try:
                module = module_from_tensors(name, org, group)
            except UserError as exc:
                raise UserError(exc.message, field="network_weights", fix=exc.problem.fix) from None
            algos[_algo_of(module)] += 1
            adopted.append(_Adopted(name, component_of_name(name), "", module))
        if missing:
            raise UserError(f"{len(missing)} LyCORIS modules in the weights do not exist in this {model.family} model "
                            f"(first: {sorted(missing)[0]})", field="network_weights",
                            fix="use weights made for the same base model family (SD1.x, SD2.x or SDXL)")
        net = cls(adopted, model.family, algo=algos.most_common(1)[0][0] if algos else "locon", multiplier=multiplier)
        return net

    # -- injection --
    def apply(self) -> "LycorisNetwork":
        for lora in self.loras():
            if getattr(lora, "_kl_applied", False):
                continue
            lora.apply_to()
            lora._kl_applied = True
        return self

    def restore(self) -> None:
        for lora in reversed(list(self.loras())):
            if getattr(lora, "_kl_applied", False):
                lora.restore()
                lora._kl_applied = False

    # -- parameters --
    # -- file layout --
    def load_kohya_state_dict(self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True) -> LoadResult:
        """Load weights in the file layout (a saved file or a training state). Shapes must match; with `strict`
        missing or unknown modules are a UserError. A module's `alpha` (hence its scale) comes from the file."""
        result = LoadResult()
        file_groups = group_modules(tensors)
        mine = {lora.lora_name: lora for lora in self.loras()}
        result.unexpected = sorted(set(file_groups) - set(mine))
        result.missing = sorted(set(mine) - set(file_groups))
        if strict and (result.missing or result.unexpected):
            raise weights_mismatch("LyCORIS", result.missing, result.unexpected,
                                   fix="use weights trained with the same LoRA type, preset and options, or tick "
                                       "'dim_from_weights'")
        for name in sorted(set(file_groups) & set(mine)):
            lora, group = mine[name], file_groups[name]
            expected = set(lora.state_dict())
            if set(group) - expected or (strict and expected - set(group)):
                raise UserError(
                    f"the weights of {name} are of another kind ({', '.join(sorted(group))}) than the network's "
                    f"({', '.join(sorted(expected))})", field="network_weights",
                    fix="use weights trained with the same LoRA type and options (Tucker, DoRA, LoKr factor), "
                        "or tick 'dim_from_weights'")
            sd = {k: v for k, v in group.items()}
            try:
                with torch.no_grad():
                    lora.load_state_dict(sd, strict=False)
            except RuntimeError as exc:
                raise UserError(f"the weights of {name} do not fit the network ({_first_line(exc)})",
                                field="network_weights",
                                fix="set network_dim / conv_dim (and the LoKr factor) to the file's, or tick "
                                    "'dim_from_weights'") from None
            _sync_scale(lora)
            result.loaded += 1
        return result

    # -- max-norm regularisation --
    @torch.no_grad()
    def apply_max_norm(self, max_norm: float, device: torch.device | str | None = None) -> tuple[int, float]:
        """The library's per-module max-norm (sd-scripts `scale_weight_norms`); modules without one are skipped.
        Returns (keys scaled, mean norm)."""
        scaled, norms = 0, []
        for lora in self.loras():
            was_scaled, norm = lora.apply_max_norm(max_norm, device)
            if was_scaled is None:
                continue
            scaled += int(bool(was_scaled))
            norms.append(float(norm))
        return scaled, (sum(norms) / len(norms) if norms else 0.0)

    # -- what the modules change --
    @torch.no_grad()
    def module_deltas(self, multiplier: float = 1.0) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """name → (ΔW, Δbias or None) at `multiplier`, fp32 on CPU, from the live modules."""
        out = {}
        for lora in self.loras():
            out[lora.lora_name] = _delta_of(lora, multiplier)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__


def _sync_scale(lora: nn.Module) -> None:
    """Loading sets the `alpha` buffer, not what the module derived from it at creation: for LoCon/LoHa/LoKr/GLoRA
    the scale (buffer / rank, also with rs_lora, whose buffer holds alpha·√rank), for the OFTs the constraint
    (buffer · output width)."""
    alpha = getattr(lora, "alpha", None)
    if not isinstance(alpha, torch.Tensor):
        return
    kind = type(lora).__name__
    if kind in ("LoConModule", "LohaModule", "LokrModule", "GLoRAModule") and getattr(lora, "lora_dim", 0):
        lora.scale = float(alpha) / lora.lora_dim
    elif kind in ("DiagOFTModule", "ButterflyOFTModule") and hasattr(lora, "constraint"):
        lora.constraint = float(alpha) * lora.dim


def _algo_of(module: nn.Module) -> str:
    return getattr(module, "name", None) or type(module).__name__.removesuffix("Module").lower()


# ---- files: modules, their algorithm, their ΔW --------------------------------------------------------------

def group_modules(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {tensor name: tensor}} of a file in the kohya layout."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, suffix = key.partition(".")
        out.setdefault(name, {})[suffix] = value
    return out


def library_suffixes() -> frozenset[str]:
    """Every tensor name a lycoris module writes (besides kohya's `lora_down/lora_up/alpha`)."""
    from lycoris.modules import MODULE_LIST

    names = set()
    for cls in MODULE_LIST:
        names.update(cls.weight_list)
    return frozenset(names)


def algo_of_tensors(suffixes: Iterable[str]) -> str:
    """The algorithm of one module from its tensor names (what the library's own detection looks at)."""
    s = set(suffixes)
    if "on_input" in s:
        return "ia3"
    if "oft_blocks" in s:
        return "oft"
    for algo, marker in (("loha", "hada_w1_a"), ("lokr", "lokr_w1"), ("lokr", "lokr_w1_a"), ("glora", "a1.weight"),
                         ("full", "diff"), ("norm", "w_norm"), ("tlora", "lambda_layer")):
        if marker in s:
            return algo
    if "lora_up.weight" in s:
        return "locon"
    return "unknown"


def _cpu_copy(org: nn.Module) -> nn.Module:
    """An fp32 CPU copy of a Linear/Conv2d/LayerNorm/GroupNorm (the library modules read the base weight)."""
    if isinstance(org, nn.Linear):
        new = nn.Linear(org.in_features, org.out_features, bias=org.bias is not None, device="meta")
    elif isinstance(org, nn.Conv2d):
        new = nn.Conv2d(org.in_channels, org.out_channels, org.kernel_size, org.stride, org.padding, org.dilation,
                        org.groups, bias=org.bias is not None, device="meta")
    elif isinstance(org, nn.LayerNorm):
        new = nn.LayerNorm(org.normalized_shape, eps=org.eps, elementwise_affine=True, bias=org.bias is not None,
                           device="meta")
    elif isinstance(org, nn.GroupNorm):
        new = nn.GroupNorm(org.num_groups, org.num_channels, eps=org.eps, affine=True, device="meta")
    else:
        raise TypeError(f"LyCORIS modules adapt Linear, Conv2d and norm layers, not {type(org).__name__}")
    new.weight = nn.Parameter(org.weight.detach().to("cpu", torch.float32, copy=True), requires_grad=False)
    if getattr(org, "bias", None) is not None:
        new.bias = nn.Parameter(org.bias.detach().to("cpu", torch.float32, copy=True), requires_grad=False)
    return new


def module_from_tensors(name: str, org: nn.Module, group: Mapping[str, torch.Tensor]) -> nn.Module:
    """A library module for `org` holding one module's tensors from a file (`group`: tensor name → tensor).

    The library's detection is used, except where lycoris 4.1 cannot rebuild its own files: iA3 (its
    `make_module_from_state_dict` takes one tensor but gets two, and drops `on_input`) and BOFT (detected as
    Diag-OFT, which shares the `oft_blocks` name; BOFT's blocks have one more dimension)."""
    from lycoris.modules import get_module, make_module
    from lycoris.modules.boft import ButterflyOFTModule
    from lycoris.modules.ia3 import IA3Module

    full = {f"{name}.{k}": v for k, v in group.items()}
    with _quiet(), torch.no_grad():
        if "on_input" in group:
            module = IA3Module(name, org, 1, train_on_input=bool(int(group["on_input"])))
            module.weight.data.copy_(group["weight"].reshape(module.weight.shape))
            return module
        if "oft_blocks" in group and group["oft_blocks"].dim() == 4:
            return ButterflyOFTModule.make_module_from_state_dict(
                name, org, group["oft_blocks"], group.get("rescale"), group.get("alpha"))
        cls, params = get_module(full, name)
        if cls is None:
            raise UserError(f"module {name} has tensors no LyCORIS algorithm uses ({', '.join(sorted(group))})",
                            fix="the file may be damaged, or made by a newer LyCORIS")
        try:
            module = make_module(cls, params, name, org)
        except RuntimeError as exc:  # the file's tensors are shaped for another model's layer
            raise UserError(f"module {name} does not fit this model's layer {tuple(org.weight.shape)}: "
                            f"{_first_line(exc)}",
                            fix="use a LyCORIS file made for this base model (the same family and size)") from None
    if module is None:
        raise UserError(f"module {name}: lycoris cannot rebuild its {cls.__name__} from a file",
                        fix="this algorithm's files cannot be read back")
    return module


def _delta_of(module: nn.Module, multiplier: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(merged − base) weight and bias of a library module at `multiplier`, fp32 on CPU."""
    org = module.org_module[0]
    base_w = module.org_weight.detach()
    device, shape = base_w.device, base_w.shape
    merged_w, merged_b = module.get_merged_weight(multiplier=multiplier, shape=shape, device=device)
    dw = merged_w.detach().to("cpu", torch.float32).reshape(shape) - base_w.to("cpu", torch.float32)
    db = None
    if merged_b is not None:
        base_b = getattr(org, "bias", None)
        if base_b is None and getattr(module, "org_bias", None):
            base_b = module.org_bias[0]
        base_b = base_b.detach().to("cpu", torch.float32) if base_b is not None else 0
        db = merged_b.detach().to("cpu", torch.float32) - base_b
    return dw, db


@torch.no_grad()
def module_delta(org: nn.Module, name: str, group: Mapping[str, torch.Tensor],
                 multiplier: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What one LyCORIS module (its tensors `group`) changes in the layer `org` at `multiplier`:
    (ΔW, Δbias or None), fp32 on CPU, shaped like `org.weight` / `org.bias`. `org` is not changed."""
    module = module_from_tensors(name, _cpu_copy(org), group)
    module.to(torch.float32)
    module.eval()
    return _delta_of(module, multiplier)


@dataclass
class ModuleDelta:
    name: str
    module: nn.Module  # the model's layer whose weight (and bias) change
    weight: torch.Tensor  # ΔW, fp32 CPU, shaped like module.weight
    bias: torch.Tensor | None = None  # Δbias (norm layers, native fine-tuning), or None


def lycoris_deltas(model: Any, tensors: Mapping[str, torch.Tensor], *, unet_multiplier: float = 1.0,
                   te_multiplier: float = 1.0) -> tuple[list[ModuleDelta], list[str]]:
    """ΔW of every module of a LyCORIS (or plain LoRA) file on `model`, at the UNet / text-encoder multipliers.
    Returns (deltas, names of file modules this model lacks). Modules at multiplier 0 are left out."""
    deltas, skipped = [], []
    index = ModuleIndex(model)
    for name, group in group_modules(tensors).items():
        org = index.get(name, norms=True)
        if org is None:
            skipped.append(name)
            continue
        w = unet_multiplier if name.startswith(naming.UNET_PREFIX + "_") else te_multiplier
        if w == 0:
            continue
        dw, db = module_delta(org, name, group, w)
        if dw.shape != org.weight.shape:
            raise UserError(f"module {name} has shape {tuple(dw.shape)}, the model's layer {tuple(org.weight.shape)}",
                            field="prompt", fix="use a LyCORIS made for the same base model family")
        deltas.append(ModuleDelta(name, org, dw, db))
    return deltas, sorted(skipped)


def file_summary(tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Algorithms, ranks and alphas of a LyCORIS file (for info, the library and the page)."""
    groups = group_modules(tensors)
    algos: Counter = Counter()
    ranks: Counter = Counter()
    alphas: Counter = Counter()
    dora = tucker = 0
    for name, g in groups.items():
        algo = algo_of_tensors(g)
        algos[algo] += 1
        rank = _rank_of(algo, g)
        if rank:
            ranks[rank] += 1
        if "alpha" in g:
            alphas[float(g["alpha"].float())] += 1
        dora += "dora_scale" in g
        tucker += any(k in g for k in ("lora_mid.weight", "hada_t1", "lokr_t2"))
    return {"modules": len(groups), "algos": dict(algos), "ranks": dict(ranks), "alphas": dict(alphas),
            "dora": dora, "tucker": tucker}


def _rank_of(algo: str, g: Mapping[str, torch.Tensor]) -> int:
    if algo == "locon":
        return int(g["lora_up.weight"].shape[1])
    if algo == "loha":
        return int(g["hada_w1_b"].shape[0])
    if algo == "lokr":
        for key, dim in (("lokr_w2_a", 1), ("lokr_w1_a", 1)):
            if key in g:
                return int(g[key].shape[dim])
        return 0
    if algo == "glora":
        return int(g["a1.weight"].shape[0])
    return 0


def algo_label(algos: Mapping[str, int]) -> str:
    """'LoHa', or 'LoCon + Norm' for a mixed file."""
    ordered = sorted(algos, key=lambda a: -algos[a])
    return " + ".join(ALGO_LABELS.get(a, a) for a in ordered if a != "unknown") or "LyCORIS"
