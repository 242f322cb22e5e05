"""What a run trains of its model (`finetune_method`): everything, LoRA adapters through peft,
or everything but frozen parameter-name patterns; and how such a model is saved and loaded.

peft is optional (`pip install 'kronos-engine[peft]'`): it is imported only for `lora`.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from kronos_engine.config import ConfigError, TrainConfig
from kronos_engine.extras import require

# The attention (self- and cross-) and SwiGLU projections of both the tokenizer and the predictor.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "w1", "w2", "w3")
# Embeddings and the first transformer block.
DEFAULT_FREEZE = {
    "tokenizer": ("embed.*", "encoder.0.*"),
    "predictor": ("embedding.*", "time_emb.*", "transformer.0.*"),
}
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FINGERPRINT = "base_model.json"


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


def is_adapted(model: nn.Module) -> bool:
    """A peft-wrapped model (duck-typed: the core never imports peft for plain runs)."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain model with the adapters folded into the base weights (the trained one is kept)."""
    return copy.deepcopy(model).merge_and_unload()


def save_adapter(model: nn.Module, directory: Path) -> None:
    """peft's own layout: `adapter_config.json` + `adapter_model.safetensors`."""
    model.save_pretrained(str(directory))


def base_fingerprint(model: nn.Module) -> str:
    """sha256 of the frozen base weights: a LoRA checkpoint holds only the adapter, so resume
    rebuilds the base from the config and must find the very same weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_adapter_checkpoint(model: nn.Module, directory: Path) -> None:
    """A resumable LoRA checkpoint's model part: the adapter and the base's fingerprint."""
    save_adapter(model, directory)
    record = {"sha256": base_fingerprint(model)}
    (directory / BASE_FINGERPRINT).write_text(json.dumps(record), encoding="utf-8")


def load_adapter(model: nn.Module, directory: Path) -> None:
    """Load adapter weights saved by `save_adapter`, strictly: every adapter tensor present,
    none unexpected."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = directory / ADAPTER_WEIGHTS
    if not path.is_file():
        raise RuntimeError(
            f"no {ADAPTER_WEIGHTS} (the checkpoint holds a whole model: resume it with the "
            "finetune_method it was written with, full or freeze)"
        )
    fingerprint = directory / BASE_FINGERPRINT
    if fingerprint.is_file():
        saved = json.loads(fingerprint.read_text(encoding="utf-8"))["sha256"]
        if saved != base_fingerprint(model):
            raise RuntimeError(
                "the frozen base model differs from the one this adapter was trained on; "
                "resume with the same pretrained_predictor/pretrained_tokenizer or model_preset "
                "and seed"
            )
    result = set_peft_model_state_dict(model, load_file(str(path)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"adapter does not fit: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
