"""Build the trained model and the frozen tokenizer from a `TrainConfig`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kronos_engine.config import ConfigError, TrainConfig


def build_tokenizer_model(cfg: TrainConfig) -> nn.Module:
    from kronos_engine.models import KronosTokenizer, build_tokenizer

    if cfg.pretrained_tokenizer:
        model = KronosTokenizer.from_pretrained(cfg.pretrained_tokenizer)
    else:
        model = build_tokenizer(cfg.model_preset)
    return apply_dropout(model, cfg.dropout)


def build_predictor_model(cfg: TrainConfig) -> nn.Module:
    from kronos_engine.models import Kronos, build_predictor

    if cfg.pretrained_predictor:
        model = Kronos.from_pretrained(cfg.pretrained_predictor)
    else:
        model = build_predictor(cfg.model_preset)
    return apply_dropout(model, cfg.dropout)


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
    from kronos_engine.models.io import _REPO_ID

    return not Path(path).exists() and bool(_REPO_ID.fullmatch(path))


def tokenizer_key(cfg: TrainConfig) -> str:
    """The config key a user changes to point a predictor run at its tokenizer."""
    return (
        "pretrained_tokenizer"
        if cfg.pretrained_tokenizer and not cfg.tokenizer_path
        else "tokenizer_path"
    )


def load_frozen_tokenizer(cfg: TrainConfig) -> nn.Module:
    """The tokenizer a predictor run encodes with; eval mode, no gradients."""
    from kronos_engine.models import KronosTokenizer

    path = cfg.resolved_tokenizer_path
    if not Path(path).exists() and not is_hub_id(path):
        raise ConfigError(
            f"{tokenizer_key(cfg)}: no tokenizer at '{path}'; a predictor needs a trained "
            f"tokenizer: run --train_type=tokenizer with the same exp_dir first, or set "
            f"tokenizer_path / pretrained_tokenizer to a tokenizer directory"
        )
    tokenizer = KronosTokenizer.from_pretrained(path)
    tokenizer.eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer


def check_bits_match(tokenizer: nn.Module, predictor: nn.Module, cfg: TrainConfig) -> None:
    """A predictor can only read the ids of a tokenizer with the same s1/s2 bit split."""
    tok_bits = (tokenizer.s1_bits, tokenizer.s2_bits)
    pred_bits = (predictor.s1_bits, predictor.s2_bits)
    if tok_bits != pred_bits:
        key = "pretrained_predictor" if cfg.pretrained_predictor else "model_preset"
        raise ConfigError(
            f"{key}: predictor s1_bits/s2_bits {pred_bits} differ from the tokenizer's "
            f"{tok_bits} ({cfg.resolved_tokenizer_path}); use a predictor with the "
            f"tokenizer's bits"
        )


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


def preflight(cfg: TrainConfig) -> None:
    """Cheap checks that need files but no data or weights: fail before any real work."""
    if cfg.train_type != "predictor":
        return
    from kronos_engine.models import predictor_config

    tok_path = cfg.resolved_tokenizer_path
    if is_hub_id(tok_path):
        return  # checked when it is downloaded
    if not Path(tok_path).exists():
        load_frozen_tokenizer(cfg)  # raises the explanatory ConfigError
    tok_cfg = _read_local_config(tok_path, tokenizer_key(cfg))
    if cfg.pretrained_predictor:
        pred_cfg = _read_local_config(cfg.pretrained_predictor, "pretrained_predictor")
    else:
        pred_cfg = predictor_config(cfg.model_preset)
    if tok_cfg is None or pred_cfg is None:
        return
    tok_bits = (tok_cfg.get("s1_bits"), tok_cfg.get("s2_bits"))
    pred_bits = (pred_cfg.get("s1_bits"), pred_cfg.get("s2_bits"))
    if tok_bits != pred_bits:
        key = "pretrained_predictor" if cfg.pretrained_predictor else "model_preset"
        raise ConfigError(
            f"{key}: predictor s1_bits/s2_bits {pred_bits} differ from the tokenizer's "
            f"{tok_bits} at '{tok_path}'; use a predictor with the tokenizer's bits"
        )
