"""What a run trains of its model (`finetune_method`): everything, LoRA adapters through peft,
or everything but frozen parameter-name patterns. How an adapted model is saved and loaded is
its file format: `kronos_engine.models.adapters`.

peft is optional (`pip install 'kronos-engine[peft]'`): it is imported only for `lora`.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from kronos_engine.config import TrainConfig
from kronos_engine.errors import ConfigError
from kronos_engine.extras import require

# The attention (self- and cross-) and SwiGLU projections of both the tokenizer and the predictor.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "w1", "w2", "w3")
# Embeddings and the first transformer block.
DEFAULT_FREEZE = {
    "tokenizer": ("embed.*", "encoder.0.*"),
    "predictor": ("embedding.*", "time_emb.*", "transformer.0.*"),
}


def apply_finetune_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Returns the model to train: unchanged (`full`), partly frozen (`freeze`) or wrapped by
    peft with LoRA adapters on `lora_targets` (`lora`; everything else frozen)."""
    if cfg.finetune_method == "freeze":
        freeze(model, cfg.freeze_patterns or list(DEFAULT_FREEZE[cfg.train_type]))
    elif cfg.finetune_method == "lora":
        return add_lora(model, cfg)
    return model


def freeze(model: nn.Module, patterns: list[str]) -> None:
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"freeze_patterns: '{pattern}' matches no parameter of the "
                f"{type(model).__name__} (names look like '{names[0]}', '{names[-1]}')"
            )
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            param.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"freeze_patterns: {patterns} freeze every parameter; nothing to train")


def add_lora(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    peft = require("peft", "finetune_method", "lora")
    targets = list(cfg.lora_targets or DEFAULT_LORA_TARGETS)
    leaf_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name}
    for target in targets:
        if target not in leaf_names:
            raise ConfigError(
                f"lora_targets: no module named '{target}' in the {type(model).__name__}; "
                f"the default targets are {list(DEFAULT_LORA_TARGETS)}"
            )
    config = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
    )
    return peft.get_peft_model(model, config)
