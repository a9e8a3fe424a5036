"""The network a training config asks for, on a loaded model: type, rank and alpha (as sd-scripts receives them
from kohya_ss), which parts train, and starting weights (`network_weights`, `dim_from_weights`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kohya_lite.config import TrainingConfig, te_lr_of, unet_lr_of
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
    from kohya_lite.network.lora import LoRANetwork

    train_unet, train_te = unet_lr_of(cfg) > 0, te_lr_of(cfg) > 0
    dropouts = dict(dropout=cfg.network_dropout, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout)
    notes: list[str] = []
    tensors = None
    if cfg.network_weights:
        from kohya_lite.network.io import read_lora_file

        tensors, _ = read_lora_file(cfg.network_weights)
    if tensors is not None and cfg.dim_from_weights:
        network = LoRANetwork.from_weights(model, tensors, **dropouts)
        notes.append(f"built the network from {cfg.network_weights} (rank and alpha per module from the file)")
        return BuiltNetwork(network, notes)
    if cfg.LoRA_type not in ("Standard", "Kohya LoCon"):
        raise UserError(f"LoRA type '{cfg.LoRA_type}' is not supported", field="LoRA_type",
                        fix="choose Standard or Kohya LoCon")
    conv = cfg.conv_dim if cfg.LoRA_type == "Kohya LoCon" else 0
    network = LoRANetwork.create(model, cfg.network_dim, effective_alpha(cfg.network_alpha), conv_rank=conv,
                                 conv_alpha=cfg.conv_alpha, train_unet=train_unet, train_text_encoder=train_te,
                                 **dropouts)
    if tensors is not None:
        network.load_kohya_state_dict(tensors, strict=False)
        notes.append(f"initialised the network from {cfg.network_weights}")
    return BuiltNetwork(network, notes)
