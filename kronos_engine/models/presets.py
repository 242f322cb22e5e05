"""Size presets for training from scratch.

`tiny` matches the reference test checkpoints; the others match the public releases
(tokenizer `base` = Kronos-Tokenizer-base; predictor `mini`/`small`/`base` = Kronos-mini,
Kronos-small, Kronos-base), so a model trained from a preset has the public shapes.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from kronos_engine.models.predictor import Kronos
from kronos_engine.models.tokenizer import KronosTokenizer

logger = logging.getLogger("kronos_engine")

_BSQ = {"beta": 0.05, "gamma0": 1.0, "gamma": 1.1, "zeta": 0.05, "group_size": 4}
_NO_DROPOUT = {"ffn_dropout_p": 0.0, "attn_dropout_p": 0.0, "resid_dropout_p": 0.0}
_PUBLIC_DROPOUT = {
    "ffn_dropout_p": 0.25,
    "attn_dropout_p": 0.1,
    "resid_dropout_p": 0.25,
    "token_dropout_p": 0.1,
}

TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "d_in": 6,
        "d_model": 32,
        "n_heads": 4,
        "ff_dim": 64,
        "n_enc_layers": 3,
        "n_dec_layers": 3,
        **_NO_DROPOUT,
        "s1_bits": 4,
        "s2_bits": 4,
        **_BSQ,
    },
    "base": {
        "d_in": 6,
        "d_model": 256,
        "n_heads": 4,
        "ff_dim": 512,
        "n_enc_layers": 4,
        "n_dec_layers": 4,
        **_NO_DROPOUT,
        "s1_bits": 10,
        "s2_bits": 10,
        **_BSQ,
    },
}

PREDICTOR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "s1_bits": 4,
        "s2_bits": 4,
        "n_layers": 2,
        "d_model": 32,
        "n_heads": 4,
        "ff_dim": 64,
        **_NO_DROPOUT,
        "token_dropout_p": 0.0,
        "learn_te": True,
    },
    "mini": {
        "s1_bits": 10,
        "s2_bits": 10,
        "n_layers": 4,
        "d_model": 256,
        "n_heads": 4,
        "ff_dim": 512,
        **_PUBLIC_DROPOUT,
        "learn_te": True,
    },
    "small": {
        "s1_bits": 10,
        "s2_bits": 10,
        "n_layers": 8,
        "d_model": 512,
        "n_heads": 8,
        "ff_dim": 1024,
        **_PUBLIC_DROPOUT,
        "learn_te": True,
    },
    "base": {
        "s1_bits": 10,
        "s2_bits": 10,
        "n_layers": 12,
        "d_model": 832,
        "n_heads": 16,
        "ff_dim": 2048,
        **_PUBLIC_DROPOUT,
        "learn_te": True,
    },
}


def _lookup(presets: dict[str, dict[str, Any]], preset: str, kind: str) -> dict[str, Any]:
    if preset not in presets:
        raise ValueError(f"unknown {kind} preset {preset!r}; choose one of {sorted(presets)}")
    return dict(presets[preset])


def tokenizer_config(preset: str) -> dict[str, Any]:
    """Constructor kwargs of `KronosTokenizer` for a preset (a fresh copy)."""
    return _lookup(TOKENIZER_PRESETS, preset, "tokenizer")


def predictor_config(preset: str) -> dict[str, Any]:
    """Constructor kwargs of `Kronos` for a preset (a fresh copy)."""
    return _lookup(PREDICTOR_PRESETS, preset, "predictor")


def _with_overrides(config: dict[str, Any], overrides: dict[str, Any], kind: str) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"unknown {kind} config key(s) {unknown}; valid keys: {sorted(config)}")
    return {**config, **overrides}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements; frozen tables count unless `trainable_only`.

    Counting frozen ones too is what the public manifests' `n_params` does.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_tokenizer(preset: str, **overrides: Any) -> KronosTokenizer:
    """A freshly initialised tokenizer from a preset, with optional config overrides."""
    config = _with_overrides(tokenizer_config(preset), overrides, "tokenizer")
    model = KronosTokenizer(**config)
    logger.info(
        "built KronosTokenizer preset=%s with %d parameters", preset, count_parameters(model)
    )
    return model


def build_predictor(preset: str, **overrides: Any) -> Kronos:
    """A freshly initialised predictor from a preset, with optional config overrides."""
    config = _with_overrides(predictor_config(preset), overrides, "predictor")
    model = Kronos(**config)
    logger.info("built Kronos preset=%s with %d parameters", preset, count_parameters(model))
    return model
