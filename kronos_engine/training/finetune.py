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
        freeze(model, freeze_patterns(cfg))
    elif cfg.finetune_method == "lora":
        return add_lora(model, cfg)
    return model


def freeze_patterns_match(model: nn.Module, patterns: list[str]) -> None:
    """Every pattern matches a parameter name (a typo would freeze nothing, silently)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"freeze_patterns: '{pattern}' matches no parameter of the "
                f"{type(model).__name__} (names look like '{names[0]}', '{names[-1]}')"
            )


def freeze(model: nn.Module, patterns: list[str]) -> None:
    freeze_patterns_match(model, patterns)
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            param.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"freeze_patterns: {patterns} freeze every parameter; nothing to train")


def lora_targets(cfg: TrainConfig) -> list[str]:
    """The module names that get adapters: `lora_targets`, else the defaults."""
    return list(cfg.lora_targets or DEFAULT_LORA_TARGETS)


def linear_names(model: nn.Module) -> list[str]:
    """The last name parts of the model's `nn.Linear` modules: what LoRA can adapt."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    """Every target names (as peft matches it: the whole module name, or its last dotted
    parts) at least one module, and only `nn.Linear` ones: peft would otherwise fail deep in
    its wrapping, or put adapters on an embedding the engine does not save or merge."""
    modules = [(name, m) for name, m in model.named_modules() if name]
    missing, not_linear, kinds = [], [], []
    for target in targets:
        hits = [m for name, m in modules if name == target or name.endswith("." + target)]
        other = sorted({type(m).__name__ for m in hits if not _is_linear(m)})
        if not hits:
            missing.append(target)
        elif other:
            not_linear.append(target)
            kinds += [k for k in other if k not in kinds]
    problems = []
    if missing:
        problems.append(f"no module named {_quoted(missing)} in the {type(model).__name__}")
    if not_linear:
        verb = "is not a Linear layer" if len(not_linear) == 1 else "are not Linear layers"
        problems.append(f"{_quoted(not_linear)} {verb} (but {', '.join(kinds)})")
    if problems:
        raise ConfigError(
            f"lora_targets: {'; '.join(problems)}; allowed: the Linear layers "
            f"{linear_names(model)} (default {list(DEFAULT_LORA_TARGETS)})"
        )


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def check_targets(model: nn.Module, cfg: TrainConfig) -> None:
    """The finetune keys fit this model's names (`lora_targets`, `freeze_patterns`), checked
    on the model's structure alone, so `preflight` can run it before any data work."""
    if cfg.finetune_method == "lora":
        check_lora_targets(model, lora_targets(cfg))
    elif cfg.finetune_method == "freeze":
        freeze_patterns_match(model, freeze_patterns(cfg))


def freeze_patterns(cfg: TrainConfig) -> list[str]:
    """The parameter-name patterns a `freeze` run keeps frozen (its key, else the defaults)."""
    return list(cfg.freeze_patterns or DEFAULT_FREEZE[cfg.train_type])


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter elements, as peft's `print_trainable_parameters` counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe_parameters(model: nn.Module) -> str:
    """`trainable params: N || all params: M || trainable%: P`, peft's line, for every mode."""
    trainable, total = parameter_counts(model)
    share = 100 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}"


def add_lora(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    peft = require("peft", "finetune_method", "lora")
    targets = lora_targets(cfg)
    check_lora_targets(model, targets)
    config = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
    )
    return peft.get_peft_model(model, config)
