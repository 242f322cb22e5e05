"""Build the trained model and the frozen tokenizer from a `TrainConfig`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kronos_engine.config import TrainConfig
from kronos_engine.errors import CheckpointError, ConfigError
from kronos_engine.models import (
    Kronos,
    KronosTokenizer,
    build_predictor,
    build_tokenizer,
    predictor_config,
    tokenizer_config,
)
from kronos_engine.models.io import _REPO_ID, read_config, resolve_checkpoint_dir
from kronos_engine.models.presets import PREDICTOR_PRESETS


def build_tokenizer_model(cfg: TrainConfig) -> nn.Module:

    return _build(KronosTokenizer, build_tokenizer, cfg.pretrained_tokenizer, cfg)


def build_predictor_model(cfg: TrainConfig) -> nn.Module:

    return _build(Kronos, build_predictor, cfg.pretrained_predictor, cfg)


def _build(cls, build_preset, pretrained: str | None, cfg: TrainConfig) -> nn.Module:
    """From a checkpoint when one is named, else from the preset; then the dropout override."""
    model = cls.from_pretrained(pretrained) if pretrained else build_preset(cfg.model_preset)
    return apply_dropout(model, cfg.dropout)


# The strategies whose model these builders make (a custom strategy builds its own).
BUILT_IN_STRATEGIES = {"tokenizer": "tokenizer_recon", "predictor": "predictor_next_token"}


def model_structure(cfg: TrainConfig) -> nn.Module | None:
    """The run's model built on the meta device (no memory, no weights, no data): its module
    and parameter names, so finetune keys can be checked before any work. None when a custom
    strategy builds the model, the model comes from the Hub, or its config cannot be read here
    (the build then reports it)."""
    if cfg.strategy not in (None, BUILT_IN_STRATEGIES[cfg.train_type]):
        return None
    if cfg.train_type == "tokenizer":
        cls, pretrained, preset = KronosTokenizer, cfg.pretrained_tokenizer, tokenizer_config
    else:
        cls, pretrained, preset = Kronos, cfg.pretrained_predictor, predictor_config
    if pretrained and is_hub_id(pretrained):
        return None  # its config is read once it is loaded (no second Hub call here)
    try:
        config = read_config(Path(pretrained), cls) if pretrained else preset(cfg.model_preset)
        with torch.device("meta"):
            return cls(**config)
    except (CheckpointError, TypeError, ValueError):
        return None


def apply_dropout(model: nn.Module, p: float | None) -> nn.Module:
    """Set every dropout probability (modules, attention, the saved config) to `p`."""
    if p is None:
        return model
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "attn_dropout_p"):
            module.attn_dropout_p = p
    config = getattr(model, "_config", None)
    if isinstance(config, dict):
        for key in config:
            if key.endswith("dropout_p"):
                config[key] = p
    return model


def is_hub_id(path: str) -> bool:
    """`namespace/name` that is not a local path: loaded from the Hub by `from_pretrained`."""

    return not Path(path).exists() and bool(_REPO_ID.fullmatch(path))


def tokenizer_key(cfg: TrainConfig) -> str:
    """The config key a user changes to point a predictor run at its tokenizer."""
    return (
        "pretrained_tokenizer"
        if cfg.pretrained_tokenizer and not cfg.tokenizer_path
        else "tokenizer_path"
    )


def require_tokenizer_path(cfg: TrainConfig, path: str | None = None) -> str:
    """The predictor's tokenizer location (`path`, default `cfg.resolved_tokenizer_path`), or
    the explanatory error when there is none."""
    path = path or cfg.resolved_tokenizer_path
    if not Path(path).exists() and not is_hub_id(path):
        raise ConfigError(
            f"{tokenizer_key(cfg)}: no tokenizer at '{path}'; a predictor needs a trained "
            f"tokenizer: run --train_type=tokenizer with the same exp_dir first, or set "
            f"tokenizer_path / pretrained_tokenizer to a tokenizer directory"
        )
    return path


def load_frozen_tokenizer(cfg: TrainConfig) -> nn.Module:
    """The tokenizer a predictor run encodes with; eval mode, no gradients."""

    tokenizer = KronosTokenizer.from_pretrained(require_tokenizer_path(cfg))
    tokenizer.eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer


def check_bits_match(tokenizer: nn.Module, predictor: nn.Module, cfg: TrainConfig) -> None:
    """A predictor can only read the ids of a tokenizer with the same s1/s2 bit split."""
    _check_bits((tokenizer.s1_bits, tokenizer.s2_bits), (predictor.s1_bits, predictor.s2_bits), cfg)


def _check_bits(tok_bits: tuple, pred_bits: tuple, cfg: TrainConfig) -> None:
    if tok_bits != pred_bits:
        key = "pretrained_predictor" if cfg.pretrained_predictor else "model_preset"
        raise ConfigError(
            f"{key}: predictor s1_bits/s2_bits {pred_bits} differ from the tokenizer's "
            f"{tok_bits} at '{cfg.resolved_tokenizer_path}'; {_matching_presets(tok_bits)}"
        )


def _matching_presets(tok_bits: tuple) -> str:
    """The predictor presets that read this tokenizer's ids, as the fix to type."""

    names = [
        name
        for name, conf in PREDICTOR_PRESETS.items()
        if (conf.get("s1_bits"), conf.get("s2_bits")) == tuple(tok_bits)
    ]
    if not names:
        return "no predictor preset has these bits; use a pretrained_predictor that does"
    flags = " or ".join(f"--model_preset={n}" for n in names)
    return f"use a predictor with the tokenizer's bits: {flags} (and no pretrained_predictor)"


def check_pretrained_paths(cfg: TrainConfig, tokenizer: str | None = None) -> None:
    """A `pretrained_*` folder that is not there fails before any data work, naming the key.
    `models/Kronos-small` also reads as a Hub id; without huggingface_hub it can only be a
    missing folder, so that is what the message says. `tokenizer`: a predictor's resolved
    tokenizer (default `cfg.resolved_tokenizer_path`); pretrained_tokenizer is checked when
    it is the one read."""
    keys = []
    if cfg.train_type == "tokenizer" and cfg.pretrained_tokenizer:
        keys.append(("pretrained_tokenizer", cfg.pretrained_tokenizer))
    if cfg.train_type == "predictor":
        tokenizer = tokenizer or cfg.resolved_tokenizer_path
        if cfg.pretrained_predictor:
            keys.append(("pretrained_predictor", cfg.pretrained_predictor))
        if cfg.pretrained_tokenizer and tokenizer == cfg.pretrained_tokenizer:
            keys.append(("pretrained_tokenizer", cfg.pretrained_tokenizer))
    import importlib.util

    hub = importlib.util.find_spec("huggingface_hub") is not None
    for key, path in keys:
        if Path(path).expanduser().exists():
            continue
        if hub and is_hub_id(path):
            _fetch_now(key, path)  # a Hub id: download now, not after the data work
            continue
        where = Path(path).expanduser().absolute()
        hub_hint = (
            ""
            if hub or not is_hub_id(path)
            else ("; or, to download it by Hub id, pip install -e '.[hub]'")
        )
        raise ConfigError(
            f"{key}: no model folder at '{where}'; download the checkpoint folder "
            f"(config.json + model.safetensors) there (README: Starting from the public "
            f"checkpoints), or remove {key} and pick model_preset to train from scratch"
            f"{hub_hint}"
        )


def _fetch_now(key: str, repo_id: str) -> None:
    """Download (or find in the Hub cache) a `pretrained_*` Hub id; offline or unknown ids fail
    here in one line naming the key. `from_pretrained` later reads the same cached copy."""

    try:
        resolve_checkpoint_dir(repo_id, None)
    except CheckpointError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _read_local_config(path: str, key: str) -> dict | None:
    """`config.json` of a local model directory, None for a hub id (not checked offline)."""
    import json

    directory = Path(path)
    if not directory.exists():
        return None
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{key}: '{path}' has no config.json (not a model directory)")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {config_file} is not valid JSON ({exc})") from None


def check_tokenizer(cfg: TrainConfig, tokenizer: str | None = None) -> None:
    """A predictor's tokenizer (`tokenizer`, default `cfg.resolved_tokenizer_path`) is there and
    its s1/s2 bits fit the predictor: read from config.json files, no weights loaded."""
    if cfg.train_type != "predictor":
        return

    tok_path = require_tokenizer_path(cfg, tokenizer)
    if is_hub_id(tok_path):
        return  # checked when it is downloaded
    tok_cfg = _read_local_config(tok_path, tokenizer_key(cfg))
    if cfg.pretrained_predictor:
        pred_cfg = _read_local_config(cfg.pretrained_predictor, "pretrained_predictor")
    else:
        pred_cfg = predictor_config(cfg.model_preset)
    if tok_cfg is None or pred_cfg is None:
        return
    _check_bits(
        (tok_cfg.get("s1_bits"), tok_cfg.get("s2_bits")),
        (pred_cfg.get("s1_bits"), pred_cfg.get("s2_bits")),
        cfg,
    )
