"""The network a training config asks for, on a loaded model: type, rank and alpha (as sd-scripts receives them
from kohya_ss), which parts train, and starting weights (`network_weights`, `dim_from_weights`).

LoRA types: Standard / Kohya LoCon (`network.lora`), LoRA-FA (the same modules with a frozen random down),
Kohya DyLoRA (`network.dylora`), and the LyCORIS types through the lycoris-lora library (`network.lycoris`).
Every network offers the same interface to the engine: apply, to, train/eval, parameters,
optimizer_param_groups, kohya_state_dict, load_kohya_state_dict, apply_max_norm, set_multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kohya_lite.config import UNSUPPORTED_LORA_TYPES, SUPPORTED_LORA_TYPES, TrainingConfig, te_lr_of, unet_lr_of
from kohya_lite.errors import UserError


def effective_alpha(network_alpha: float) -> float:
    """kohya_ss drops zero values from the config it hands sd-scripts, which then uses its default alpha of 1
    (scale 1/rank). An alpha of 0 therefore means 1 here too."""
    return network_alpha if network_alpha else 1.0


@dataclass
class BuiltNetwork:
    network: object
    notes: list[str] = field(default_factory=list)  # what was loaded from where, for the log


def build_network(cfg: TrainingConfig, model) -> BuiltNetwork:
    from kohya_lite.network import lycoris

    if cfg.LoRA_type in UNSUPPORTED_LORA_TYPES or cfg.LoRA_type not in SUPPORTED_LORA_TYPES:
        why = UNSUPPORTED_LORA_TYPES.get(cfg.LoRA_type, "it is not a kohya_ss LoRA type kohya-lite knows")
        raise UserError(f"LoRA type '{cfg.LoRA_type}' is not supported: {why}", field="LoRA_type",
                        fix="choose Standard, Kohya LoCon, LyCORIS/LoCon, LyCORIS/LoHa or LyCORIS/LoKr")
    if lycoris.is_lycoris_type(cfg.LoRA_type):
        return _build_lycoris(cfg, model)
    if cfg.LoRA_type == "Kohya DyLoRA":
        return _build_dylora(cfg, model)
    return _build_lora(cfg, model)


def _weights(cfg: TrainingConfig, model, *, allow_lycoris: bool = False):
    if not cfg.network_weights:
        return None
    from kohya_lite.network.io import load_lora

    return load_lora(cfg.network_weights, family=model.family, field_name="network_weights",
                     allow_lycoris=allow_lycoris).tensors


def _build_lora(cfg: TrainingConfig, model) -> BuiltNetwork:
    """Standard, Kohya LoCon (sd-scripts networks.lora) and LoRA-FA (networks.lora_fa: no conv rank)."""
    from kohya_lite.network.lora import LoRANetwork

    train_unet, train_te = unet_lr_of(cfg) > 0, te_lr_of(cfg) > 0
    fa = cfg.LoRA_type == "LoRA-FA"
    dropouts = dict(dropout=cfg.network_dropout, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout)
    notes: list[str] = []
    tensors = _weights(cfg, model)
    if tensors is not None and cfg.dim_from_weights:
        network = LoRANetwork.from_weights(model, tensors, frozen_down=fa, **dropouts)
        notes.append(f"built the network from {cfg.network_weights} (rank and alpha per module from the file)")
        return BuiltNetwork(network, notes)
    conv = cfg.conv_dim if cfg.LoRA_type == "Kohya LoCon" else 0
    network = LoRANetwork.create(model, cfg.network_dim, effective_alpha(cfg.network_alpha), conv_rank=conv,
                                 conv_alpha=cfg.conv_alpha, train_unet=train_unet, train_text_encoder=train_te,
                                 frozen_down=fa, **dropouts)
    if tensors is not None:
        network.load_kohya_state_dict(tensors, strict=False)
        notes.append(f"initialised the network from {cfg.network_weights}")
    return BuiltNetwork(network, notes)


def _build_dylora(cfg: TrainingConfig, model) -> BuiltNetwork:
    from kohya_lite.network.dylora import DyLoRANetwork

    unit = max(1, int(cfg.unit or 1))
    tensors = _weights(cfg, model)
    if tensors is not None and cfg.dim_from_weights:
        network = DyLoRANetwork.from_weights(model, tensors, unit=unit)
        return BuiltNetwork(network, [f"built the DyLoRA network from {cfg.network_weights}"])
    network = DyLoRANetwork.create(model, cfg.network_dim, effective_alpha(cfg.network_alpha), unit=unit,
                                   conv=bool(cfg.conv_dim), train_unet=unet_lr_of(cfg) > 0,
                                   train_text_encoder=te_lr_of(cfg) > 0)
    notes = []
    if tensors is not None:
        network.load_kohya_state_dict(tensors, strict=False)
        notes.append(f"initialised the network from {cfg.network_weights}")
    return BuiltNetwork(network, notes)


def _build_lycoris(cfg: TrainingConfig, model) -> BuiltNetwork:
    from kohya_lite.network.lycoris import ALGO_LABELS, ALGOS, LycorisNetwork

    train_unet, train_te = unet_lr_of(cfg) > 0, te_lr_of(cfg) > 0
    tensors = _weights(cfg, model, allow_lycoris=True)
    if tensors is not None and cfg.dim_from_weights:
        network = LycorisNetwork.from_weights(model, tensors, train_unet=train_unet, train_text_encoder=train_te)
        return BuiltNetwork(network, [f"built the LyCORIS network from {cfg.network_weights} (each module's "
                                      "algorithm and size from the file)"])
    network = LycorisNetwork.create(cfg, model, train_unet=train_unet, train_text_encoder=train_te)
    counts = network.module_counts()
    notes = [f"LyCORIS {ALGO_LABELS[ALGOS[cfg.LoRA_type]]} (lycoris-lora, preset {cfg.LyCORIS_preset}): "
             + ", ".join(f"{n} {k} modules" for k, n in counts.items())] + network.notes
    if tensors is not None:
        network.load_kohya_state_dict(tensors, strict=False)
        notes.append(f"initialised the network from {cfg.network_weights}")
    return BuiltNetwork(network, notes)
