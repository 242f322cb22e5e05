"""The file format of a LoRA-adapted model: peft's adapter layout (`adapter_config.json` +
`adapter_model.safetensors`) and, in a resumable checkpoint, the fingerprint of the frozen base
it was trained on. peft itself is imported only when adapters are loaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from kronos_engine.models.fingerprint import weights_fingerprint

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FINGERPRINT = "base_model.json"


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
    return weights_fingerprint(model, skip="lora_")


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
